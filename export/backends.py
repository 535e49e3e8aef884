"""Choosing a backend: `create_backend(avatar_dir, name="auto"|"torch"|"onnxruntime"|"tensorrt", device=...)`.

`auto` tries the fastest first -- TensorRT engines, then ONNX Runtime (its TensorRT or CUDA provider on a GPU,
its CPU provider otherwise: faster than eager PyTorch on a CPU, see docs/performance.md), then PyTorch -- and
logs which one it picked and why the faster ones were passed over. Every backend imports its library only
when it is created, so importing this module needs neither onnxruntime nor tensorrt nor a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from avatar.backend import Backend
from avatar.errors import BackendError, InputError
from avatar.manifest import resolve_avatar

log = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")


@dataclass
class BackendChoice:
    """What `auto` picked and why the others were not used (for the CLI and the bench report)."""

    backend: Backend
    name: str
    passed_over: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        dev = getattr(self.backend, "device", "")
        text = f"backend {self.name}" + (f" ({dev})" if dev else "")
        if self.passed_over:
            text += "; not used: " + "; ".join(f"{k}: {v}" for k, v in self.passed_over.items())
        return text


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _torch(avatar_dir: Path, device: str, tiers: list[str] | None) -> Backend:
    from avatar.loading import load_avatar

    if device in ("auto", "tensorrt"):
        device = "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise BackendError("PyTorch sees no CUDA GPU here", "use --device cpu")
    return load_avatar(avatar_dir, device=device).backend


def _onnxruntime(avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool, threads: int | None) -> Backend:
    from export.onnx_backend import OnnxRuntimeBackend, OrtConfig

    return OnnxRuntimeBackend(avatar_dir, tiers, OrtConfig(device=device, threads=threads, fp16=fp16))


def _tensorrt(avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool) -> Backend:
    from export.tensorrt_backend import TensorRTBackend

    if device == "cpu":
        raise BackendError("TensorRT runs on NVIDIA GPUs only", "use --backend onnxruntime or torch for --device cpu")
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return TensorRTBackend(avatar_dir, tiers, fp16=fp16, device=index)


def create_backend(avatar_dir: str | Path | None = None, name: str = "auto", device: str = "auto",
                   tiers: list[str] | None = None, fp16: bool = False, threads: int | None = None) -> Backend:
    """A ready backend for the avatar (None: the built-in one). `device`: auto | cpu | cuda[:N]."""
    return choose_backend(avatar_dir, name, device, tiers, fp16, threads).backend


def choose_backend(avatar_dir: str | Path | None = None, name: str = "auto", device: str = "auto",
                   tiers: list[str] | None = None, fp16: bool = False, threads: int | None = None) -> BackendChoice:
    avatar_dir = resolve_avatar(avatar_dir)
    if name not in ("auto", *BACKEND_NAMES):
        raise InputError(f"unknown backend {name!r}", f"one of auto, {', '.join(BACKEND_NAMES)}")
    candidates = AUTO_ORDER if name == "auto" else (name,)
    passed: dict[str, str] = {}
    for candidate in candidates:
        try:
            backend = _create_one(candidate, avatar_dir, device, tiers, fp16, threads)
        except BackendError as exc:
            if name != "auto":
                raise
            passed[candidate] = str(exc)
            continue
        choice = BackendChoice(backend=backend, name=candidate, passed_over=passed)
        if name == "auto":
            log.info("auto: %s", choice.describe())
        return choice
    raise BackendError(f"{avatar_dir}: no backend can run here ({'; '.join(f'{k}: {v}' for k, v in passed.items())})")


def _create_one(name: str, avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool,
                threads: int | None) -> Backend:
    if name == "torch":
        return _torch(avatar_dir, device, tiers)
    if name == "onnxruntime":
        return _onnxruntime(avatar_dir, device, tiers, fp16, threads)
    if name == "tensorrt":
        return _tensorrt(avatar_dir, "cuda" if device == "auto" else device, tiers, fp16)
    raise InputError(f"unknown backend {name!r}", f"one of {', '.join(BACKEND_NAMES)}")


def available_backends(avatar_dir: str | Path | None = None, device: str = "auto",
                       tiers: list[str] | None = None, fp16: bool = False,
                       threads: int | None = None) -> tuple[dict[str, Backend], dict[str, str]]:
    """Every backend that can run this avatar here, and why the others cannot (for `ideal bench --backend all`
    and the parity tests)."""
    avatar_dir = resolve_avatar(avatar_dir)
    ok: dict[str, Backend] = {}
    why: dict[str, str] = {}
    for name in BACKEND_NAMES:
        try:
            ok[name] = _create_one(name, avatar_dir, device, tiers, fp16, threads)
        except BackendError as exc:
            why[name] = str(exc)
    return ok, why
