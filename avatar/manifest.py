"""Manifests of the two on-disk artifacts: the dataset dir (`ideal prepare`) and the avatar dir (`ideal train`).

This module is the one place that knows their file names and format versions; every reader goes through
`load_dataset_manifest` / `load_avatar_manifest`, which validate and say clearly what is missing or from an
incompatible version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ideal.avatar.errors import AvatarError, InputError

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


def rewrite_avatar_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Replace an existing avatar's avatar.json atomically (a reader never sees half a file)."""
    path = Path(directory) / AVATAR_MANIFEST
    tmp = path.with_suffix(".json.partial")
    write_json(tmp, manifest)
    os.replace(tmp, path)
    return path


def _read_manifest(directory: Path, name: str, kind: str, error: type) -> dict[str, Any]:
    if not directory.is_dir():
        raise error(f"{directory}: no such {kind} directory", f"create it with `ideal {'prepare' if kind == 'dataset' else 'train'}`")
    path = directory / name
    if not path.exists():
        raise error(f"{directory}: not a {kind} directory ({name} is missing)",
                    f"point at a directory written by `ideal {'prepare' if kind == 'dataset' else 'train'}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: corrupt manifest ({exc.msg} at line {exc.lineno})",
                    f"re-run `ideal {'prepare' if kind == 'dataset' else 'train'}`") from exc


def _check(directory: Path, manifest: dict, required: tuple[str, ...], version: int, kind: str, error: type) -> None:
    found = manifest.get("format_version")
    if found != version:
        raise error(f"{directory}: {kind} format version {found!r}, this ideal-nerf reads version {version}",
                    f"re-create it with this version's `ideal {'prepare' if kind == 'dataset' else 'train'}`")
    missing = [f for f in required if not (directory / f).exists()]
    if missing:
        raise error(f"{directory}: incomplete {kind} directory, missing {', '.join(missing)}",
                    f"re-run `ideal {'prepare' if kind == 'dataset' else 'train'}`")


def load_dataset_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    m = _read_manifest(directory, DATASET_MANIFEST, "dataset", InputError)
    _check(directory, m, DATASET_FILES, DATASET_FORMAT_VERSION, "dataset", InputError)
    return m


def load_avatar_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    m = _read_manifest(directory, AVATAR_MANIFEST, "avatar", AvatarError)
    _check(directory, m, AVATAR_FILES, AVATAR_FORMAT_VERSION, "avatar", AvatarError)
    return m


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
