"""Where exported graphs and engines of an avatar live, what they are called, and whether they are current.

Layout of an export dir (`avatar.manifest.cache_dir_for(avatar_dir)`: `AVATAR/exported/` when the avatar dir
is writable, else a user cache):

    export.json                                   manifest: avatar fingerprint, batch range, graphs + sha256
    condition.onnx                                encoders + EAA:        audio, expression -> cond
    mouth.onnx                                    audio-to-mouth model:  mouth_audio -> mouth
    field.<tier>.onnx                             field + volume render: cond, pose -> rgb, alpha, feat
    refine.<tier>.onnx                            upsampler (refine tiers only): rgb, alpha, feat -> rgb, alpha
    engines/<graph>.<gpu>.sm<cc>.trt<ver>.<fp16|fp32>.engine  (+ .json sidecar: source graph sha256, ...)
    engines/timing.<gpu>.sm<cc>.trt<ver>.cache    TensorRT timing cache, reused across builds

The export manifest records a fingerprint of the avatar (sha256 of avatar.json and weights.pt): graphs
exported from other weights are stale and refused with the command that re-exports them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ideal.avatar.errors import BackendError
from ideal.avatar.manifest import AVATAR_MANIFEST, cache_dir_for, sha256_file

EXPORT_FORMAT_VERSION = 1
EXPORT_MANIFEST = "export.json"
ENGINES_DIR = "engines"

CONDITION = "condition"
MOUTH = "mouth"
FIELD = "field"
REFINE = "refine"


def graph_key(stage: str, tier: str | None = None) -> str:
    """`condition`, `mouth`, `field.high`, `refine.high`."""
    return stage if tier is None else f"{stage}.{tier}"


def graph_file(key: str) -> str:
    return f"{key}.onnx"


def avatar_fingerprint(avatar_dir: str | Path) -> str:
    """sha256 over the avatar's manifest and weights: changes whenever the avatar is retrained."""
    import hashlib

    avatar_dir = Path(avatar_dir)
    h = hashlib.sha256()
    for name in (AVATAR_MANIFEST, "weights.pt"):
        path = avatar_dir / name
        h.update(name.encode())
        h.update(sha256_file(path).encode() if path.exists() else b"-")
    return h.hexdigest()


def export_dir_for(avatar_dir: str | Path) -> Path:
    return cache_dir_for(avatar_dir)


@dataclass
class GraphInfo:
    """One exported graph: its file, checksum and I/O signature (names -> shapes, "B" for the batch)."""

    file: str
    sha256: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    stage: str
    tier: str | None = None


@dataclass
class ExportManifest:
    avatar_fingerprint: str
    avatar_format_version: int
    opset: int
    exporter: str
    batch: dict[str, int]  # {"min", "opt", "max"}
    tiers: dict[str, dict]  # Tier.to_dict() per exported tier
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)  # max abs diff vs PyTorch per graph
    plane_lookup: str = "grid_sample"  # how the field graphs sample the tri-plane (ExportConfig.plane_lookup)
    export_format_version: int = EXPORT_FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExportManifest":
        d = dict(d)
        d["graphs"] = {k: GraphInfo(**v) for k, v in d.get("graphs", {}).items()}
        return cls(**d)

    def save(self, directory: Path) -> None:
        (directory / EXPORT_MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _reexport_hint(avatar_dir: Path, target: str = "onnx") -> str:
    return f"run `ideal export {avatar_dir} --target {target}`"


def load_export_manifest(avatar_dir: str | Path, export_dir: str | Path | None = None) -> tuple[Path, ExportManifest]:
    """The export dir and manifest of an avatar, refusing missing, corrupt, old-format or stale exports."""
    avatar_dir = Path(avatar_dir)
    directory = Path(export_dir) if export_dir is not None else export_dir_for(avatar_dir)
    path = directory / EXPORT_MANIFEST
    if not path.exists():
        raise BackendError(f"{avatar_dir}: no exported ONNX graphs (looked in {directory})", _reexport_hint(avatar_dir))
    try:
        manifest = ExportManifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise BackendError(f"{path}: corrupt export manifest ({exc})", _reexport_hint(avatar_dir)) from exc
    if manifest.export_format_version != EXPORT_FORMAT_VERSION:
        raise BackendError(f"{path}: export format version {manifest.export_format_version}, this ideal-nerf reads "
                           f"version {EXPORT_FORMAT_VERSION}", _reexport_hint(avatar_dir))
    if manifest.avatar_fingerprint != avatar_fingerprint(avatar_dir):
        raise BackendError(f"{directory}: graphs were exported from other weights than {avatar_dir} has now (stale)",
                           _reexport_hint(avatar_dir))
    return directory, manifest


def check_graph_file(directory: Path, info: GraphInfo, avatar_dir: Path) -> Path:
    """Path of a graph after checking it exists and is the file the manifest recorded (not truncated/corrupt)."""
    path = directory / info.file
    if not path.exists():
        raise BackendError(f"{path}: exported graph is missing", _reexport_hint(avatar_dir))
    if sha256_file(path) != info.sha256:
        raise BackendError(f"{path}: exported graph is corrupt (checksum differs from {EXPORT_MANIFEST})",
                           _reexport_hint(avatar_dir))
    return path


# --- TensorRT engine names -------------------------------------------------------------------------------
def slug(text: str) -> str:
    """`NVIDIA GeForce RTX 4090` -> `nvidia-geforce-rtx-4090`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


@dataclass(frozen=True)
class EngineTarget:
    """What a TensorRT engine is tied to: it only runs on this GPU model with this TensorRT version."""

    gpu_name: str
    compute_capability: tuple[int, int]
    trt_version: str
    fp16: bool

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    @property
    def tag(self) -> str:
        major, minor = self.compute_capability
        return f"{slug(self.gpu_name)}.sm{major}{minor}.trt{self.trt_version}"

    def engine_file(self, key: str) -> str:
        return f"{key}.{self.tag}.{self.precision}.engine"

    def timing_cache_file(self) -> str:
        return f"timing.{self.tag}.cache"


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(".json")


def other_engines(engine_dir: Path, key: str, target: EngineTarget) -> list[str]:
    """Engines of the same graph built for another GPU, TensorRT version or precision (for error messages)."""
    if not engine_dir.is_dir():
        return []
    own = target.engine_file(key)
    return sorted(p.name for p in engine_dir.glob(f"{key}.*.engine") if p.name != own)


def engine_status(engine_dir: Path, key: str, target: EngineTarget, graph_sha256: str) -> tuple[str, str]:
    """("ok" | "missing" | "stale" | "corrupt", reason) for the engine of graph `key` on `target`.

    An engine is only usable when its sidecar says it was built from exactly the current graph (sha256) for this
    GPU and TensorRT version, and the engine file is the one the sidecar describes."""
    path = engine_dir / target.engine_file(key)
    if not path.exists():
        others = other_engines(engine_dir, key, target)
        why = f"no engine for {target.gpu_name} (sm{''.join(map(str, target.compute_capability))}), " \
              f"TensorRT {target.trt_version}, {target.precision}"
        if others:
            why += f"; found engines built for another GPU/TensorRT version/precision: {', '.join(others)}"
        return "missing", why
    side = sidecar_path(path)
    if not side.exists():
        return "stale", f"{path.name} has no sidecar {side.name}, so its source graph is unknown"
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError:
        return "corrupt", f"{side.name} is not valid JSON"
    if meta.get("onnx_sha256") != graph_sha256:
        return "stale", f"{path.name} was built from another version of {graph_file(key)}"
    if meta.get("trt_version") != target.trt_version or slug(meta.get("gpu_name", "")) != slug(target.gpu_name):
        return "stale", f"{path.name} was built for {meta.get('gpu_name')} / TensorRT {meta.get('trt_version')}"
    if meta.get("engine_sha256") != sha256_file(path):
        return "corrupt", f"{path.name} does not match the checksum in {side.name} (truncated or overwritten)"
    return "ok", ""
