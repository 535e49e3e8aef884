"""Manifests of the two on-disk artifacts: the dataset dir (`ideal prepare`) and the avatar dir (`ideal train`).

This module is the one place that knows their file names and format versions and checks them
(`read_manifest`); the typed manifests build on it: avatar.dataset_manifest (`load_dataset_manifest`) and
avatar.avatar_manifest (`load_avatar_manifest`), which say clearly what is missing or from an incompatible version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, TypeVar

from ideal.avatar.errors import AvatarError, IdealError, InputError
from ideal.avatar.records import Record, RecordError

R = TypeVar("R", bound=Record)

DATASET_FORMAT_VERSION = 1
AVATAR_FORMAT_VERSION = 1

DATASET_MANIFEST = "dataset.json"
AVATAR_MANIFEST = "avatar.json"

# Files every dataset dir holds (see docs/formats.md for their shapes and meaning).
DATASET_FILES = (
    DATASET_MANIFEST, "audio.wav", "mel.npy", "landmarks.npy", "canonical.npy", "neutral.npy", "pose.npz",
    "expression.npy", "head_boxes.npy", "background.png", "frames", "masks",
)
# Files every avatar dir holds.
AVATAR_FILES = (AVATAR_MANIFEST, "weights.pt", "pose_track.npz", "base_plate.npz")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


class ManifestKind(NamedTuple):
    """What differs between the two manifests' checks: file name, format version, files, error, fixing command."""

    name: str  # "dataset" | "avatar"
    file: str
    version: int
    files: tuple[str, ...]
    error: type[IdealError]
    command: str


DATASET = ManifestKind("dataset", DATASET_MANIFEST, DATASET_FORMAT_VERSION, DATASET_FILES, InputError, "ideal prepare")
AVATAR = ManifestKind("avatar", AVATAR_MANIFEST, AVATAR_FORMAT_VERSION, AVATAR_FILES, AvatarError, "ideal train")


def read_manifest(directory: Path, kind: ManifestKind) -> dict[str, Any]:
    """The JSON object of a dataset or avatar dir's manifest, after the one check of its format version and
    files; the typed readers (avatar.dataset_manifest, avatar.avatar_manifest) build on it."""
    if not directory.is_dir():
        raise kind.error(f"{directory}: no such {kind.name} directory", f"create it with `{kind.command}`")
    path = directory / kind.file
    if not path.exists():
        raise kind.error(f"{directory}: not a {kind.name} directory ({kind.file} is missing)",
                         f"point at a directory written by `{kind.command}`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise kind.error(f"{path}: corrupt manifest ({exc.msg} at line {exc.lineno})",
                         f"re-run `{kind.command}`") from exc
    found = manifest.get("format_version") if isinstance(manifest, dict) else None
    if found != kind.version:
        raise kind.error(f"{directory}: {kind.name} format version {found!r}, this ideal-nerf reads version "
                         f"{kind.version}", f"re-create it with this version's `{kind.command}`")
    missing = [f for f in kind.files if not (directory / f).exists()]
    if missing:
        raise kind.error(f"{directory}: incomplete {kind.name} directory, missing {', '.join(missing)}",
                         f"re-run `{kind.command}`")
    return manifest


def load_manifest(directory: str | Path, kind: ManifestKind, record: type[R],
                  fixes: Mapping[str, str] | None = None) -> R:
    """The manifest of a dataset or avatar dir as its typed record; a key that is missing or of the wrong type
    is the kind's error naming the file and the key, with the command that fixes it (`fixes`: top-level key ->
    hint, where another command than the kind's own rewrites that key)."""
    directory = Path(directory)
    data = read_manifest(directory, kind)
    try:
        return record.from_dict(data)
    except RecordError as exc:
        hint = (fixes or {}).get(exc.key.split(".")[0].split("[")[0], f"re-run `{kind.command}`")
        raise kind.error(f"{directory / kind.file}: {exc}", hint) from exc


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest so that a reader never sees half a file (also when it replaces an existing one)."""
    tmp = path.with_suffix(".json.partial")
    write_json(tmp, manifest)
    os.replace(tmp, path)


@contextmanager
def atomic_output_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a directory under a temporary name beside `target` and rename it into place only on success,
    so a failed or interrupted run never leaves a half-written directory that looks complete."""
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError(f"{target}: already exists and is not empty", "pass --overwrite or choose another -o")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


# --- where shipped and cached artifacts live -------------------------------------------------------------
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_AVATAR_DIR = ASSETS_DIR / "default_avatar"  # the built-in avatar (obama_20s.mp4, public domain)
MOUTH_MODEL_DIR = ASSETS_DIR / "mouth_model"  # the shipped speaker-independent audio-to-mouth model


def resolve_avatar(name_or_path: str | Path | None) -> Path:
    """`None` or "default" -> the built-in avatar; anything else is a path to an avatar dir."""
    if name_or_path in (None, "", "default"):
        return DEFAULT_AVATAR_DIR
    return Path(name_or_path)


def cache_dir_for(avatar_dir: str | Path) -> Path:
    """Where exported graphs and engines of an avatar go: beside it when writable, else a user cache keyed by
    the avatar's manifest hash (e.g. the built-in avatar inside an installed package)."""
    avatar_dir = Path(avatar_dir)
    beside = avatar_dir / "exported"
    if os.access(avatar_dir, os.W_OK) and (not beside.exists() or os.access(beside, os.W_OK)):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ideal-nerf"
    key = sha256_file(avatar_dir / AVATAR_MANIFEST)[:16]
    return base / f"{avatar_dir.name}-{key}"
