"""Choosing a backend: `create_backend(avatar_dir, name="auto"|"torch"|"onnxruntime"|"tensorrt", device=...)`.

`auto` creates every backend that can run here -- TensorRT engines, ONNX Runtime (its TensorRT or CUDA provider
on a GPU, its CPU provider otherwise), PyTorch -- times one frame of the cheapest tier on each (after a warm-up
call) and keeps the fastest, logging which one it picked, the measured times, and why the others were not used.
Which is fastest depends on the model and the machine (on the project's CPU machines ONNX Runtime wins on the
encoders and the refiner but its GridSample kernel makes the field about as slow as PyTorch's; see
docs/performance.md), so it is measured rather than assumed. Every backend imports its library only when it
is created, so importing this module needs neither onnxruntime nor tensorrt nor a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ideal.avatar.backend import Backend
from ideal.avatar.errors import BackendError, InputError
from ideal.avatar.manifest import resolve_avatar
from ideal.export.quantize import Int8Policy

log = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")


@dataclass
class BackendChoice:
    """What `auto` picked and why the others were not used (for the CLI and the bench report)."""

    backend: Backend
    name: str
    passed_over: dict[str, str] = field(default_factory=dict)
    measured_ms: dict[str, float] = field(default_factory=dict)  # auto: one frame of the cheapest tier

    def describe(self) -> str:
        dev = getattr(self.backend, "device", "")
        text = f"backend {self.name}" + (f" ({dev})" if dev else "")
        if self.name in self.measured_ms:
            text += f", {self.measured_ms[self.name]:.0f} ms/frame"
        if self.passed_over:
            text += "; not used: " + "; ".join(f"{k}: {v}" for k, v in self.passed_over.items())
        return text


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _torch(avatar_dir: Path, device: str, tiers: list[str] | None) -> Backend:
    from ideal.avatar.loading import load_avatar

    if device in ("auto", "tensorrt"):
        device = "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise BackendError("PyTorch sees no CUDA GPU here", "use --device cpu")
    return load_avatar(avatar_dir, device=device).backend


def _onnxruntime(avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool, threads: int | None,
                 int8: bool | Int8Policy = True) -> Backend:
    from ideal.export.onnx_backend import OnnxRuntimeBackend, OrtConfig

    return OnnxRuntimeBackend(avatar_dir, tiers, OrtConfig(device=device, threads=threads, fp16=fp16, int8=int8))


def _tensorrt(avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool) -> Backend:
    from ideal.export.tensorrt_backend import TensorRTBackend

    if device == "cpu":
        raise BackendError("TensorRT runs on NVIDIA GPUs only", "use --backend onnxruntime or torch for --device cpu")
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return TensorRTBackend(avatar_dir, tiers, fp16=fp16, device=index)


def create_backend(avatar_dir: str | Path | None = None, name: str = "auto", device: str = "auto",
                   tiers: list[str] | None = None, fp16: bool = False, threads: int | None = None,
                   int8: bool | Int8Policy = True, render_url: str | None = None) -> Backend:
    """A ready backend for the avatar (None: the built-in one). `device`: auto | cpu | cuda[:N]; `int8`: ONNX Runtime
    on CPU runs the INT8 refine graphs when exported (export/quantize.py); `render_url` (grpc://HOST:PORT): the
    avatar's render models on a Triton Inference Server instead (export/triton_backend.py)."""
    return choose_backend(avatar_dir, name, device, tiers, fp16, threads, int8=int8, render_url=render_url).backend


def choose_backend(avatar_dir: str | Path | None = None, name: str = "auto", device: str = "auto",
                   tiers: list[str] | None = None, fp16: bool = False, threads: int | None = None,
                   measure: bool = True, int8: bool | Int8Policy = True,
                   render_url: str | None = None) -> BackendChoice:
    """A named backend, or with `auto` the fastest that runs here (measured unless `measure=False`, then the
    first of TensorRT, ONNX Runtime, PyTorch that can be created). With `render_url` the Triton backend (the
    name must then be auto or triton)."""
    avatar_dir = resolve_avatar(avatar_dir)
    if render_url or name == "triton":
        if not render_url:
            raise InputError("backend triton needs the server's address", "pass --render-url grpc://HOST:PORT")
        if name not in ("auto", "triton"):
            raise InputError(f"--backend {name} with --render-url {render_url}",
                             "leave --backend out (or auto): --render-url renders on the Triton server")
        from ideal.export.triton_backend import TritonBackend

        return BackendChoice(backend=TritonBackend(avatar_dir, render_url, tiers), name="triton")
    if name not in ("auto", *BACKEND_NAMES):
        raise InputError(f"unknown backend {name!r}", f"one of auto, {', '.join(BACKEND_NAMES)}")
    if name != "auto":
        return BackendChoice(backend=_create_one(name, avatar_dir, device, tiers, fp16, threads, int8), name=name)
    passed: dict[str, str] = {}
    created: dict[str, Backend] = {}
    for candidate in AUTO_ORDER:
        try:
            created[candidate] = _create_one(candidate, avatar_dir, device, tiers, fp16, threads, int8)
        except BackendError as exc:
            passed[candidate] = str(exc)
            continue
        if not measure:
            break
    if not created:
        raise BackendError(f"{avatar_dir}: no backend can run here "
                           f"({'; '.join(f'{k}: {v}' for k, v in passed.items())})")
    measured: dict[str, float] = {}
    if measure and len(created) > 1:
        measured = {k: frame_ms(b, avatar_dir) for k, b in created.items()}
        best = min(measured, key=lambda k: measured[k])
        for k, ms in measured.items():
            if k != best:
                passed[k] = f"slower here ({ms:.0f} vs {measured[best]:.0f} ms per frame of the cheapest tier)"
    else:
        best = next(iter(created))
    choice = BackendChoice(backend=created[best], name=best, passed_over=passed, measured_ms=measured)
    log.info("auto: %s", choice.describe())
    return choice


def ensure_onnx_export(avatar_dir: str | Path | None = None) -> str:
    """Export the avatar's ONNX graphs when onnxruntime is installed and they are missing or stale, so that the
    streamer's `auto` can use ONNX Runtime: on the project's 2-vCPU machines it holds 25 fresh fps where PyTorch
    repeats frames (docs/performance.md). One-time cost ~18 s for the built-in avatar (with the INT8 refiners);
    the graphs go beside the avatar, or into the user cache when it is read-only. Returns "current", "exported",
    or why nothing was done; never raises for a failed export (serving on PyTorch still works), it logs the
    reason."""
    from ideal.avatar.avatar_manifest import load_avatar_manifest
    from ideal.export.artifacts import load_export_manifest

    avatar_dir = resolve_avatar(avatar_dir)
    load_avatar_manifest(avatar_dir)  # a missing or broken avatar is the user's error to hear about, not ours to skip
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"

    try:
        _, manifest = load_export_manifest(avatar_dir)
        if not _lacks_int8(manifest):
            return "current"
        log.info("exporting %s for ONNX Runtime once more (no INT8 refine graphs: exported by an older version)",
                 avatar_dir)
    except BackendError as exc:
        log.info("exporting %s for ONNX Runtime once (%s)", avatar_dir, exc)
    from ideal.export.onnx_export import ExportConfig, export_avatar

    try:
        directory, _ = export_avatar(avatar_dir, ExportConfig())
    except Exception as exc:
        log.warning("could not export %s for ONNX Runtime (%s); rendering with PyTorch", avatar_dir, exc)
        return f"export failed: {exc}"
    log.info("exported %s -> %s", avatar_dir, directory)
    return "exported"


def _lacks_int8(manifest) -> bool:
    """An export from before INT8 refine graphs existed, on a machine that can make them."""
    from ideal.export.artifacts import REFINE, graph_key
    from ideal.export.quantize import int8_key, quantization_available

    missing = [t for t, v in manifest.tiers.items() if v.get("refine")
               and int8_key(graph_key(REFINE, t)) not in manifest.graphs]
    return bool(missing) and quantization_available()


def frame_ms(backend: Backend, avatar_dir: Path, repeats: int = 2) -> float:
    """Median ms of one frame (batch 1) of the backend's cheapest tier, after one warm-up call, on a real pose
    of the avatar (silence-level audio, neutral expression: cost does not depend on the values)."""
    import time

    import numpy as np

    from ideal.avatar.avatar_manifest import load_avatar_manifest
    from ideal.avatar.expression import EXPRESSION_DIM

    manifest = load_avatar_manifest(avatar_dir)
    with np.load(avatar_dir / "pose_track.npz") as z:
        pose = np.asarray(z["pose"][:1], np.float32)
    audio = np.zeros((1, manifest.audio_window.length, manifest.mel.n_mels), np.float32)
    expression = np.zeros((1, EXPRESSION_DIM), np.float32)
    tiers = backend.tiers
    tier = min(tiers, key=lambda t: tiers[t].rays * tiers[t].rays * tiers[t].samples)
    backend.render(audio, expression, pose, tier)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.render(audio, expression, pose, tier)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _create_one(name: str, avatar_dir: Path, device: str, tiers: list[str] | None, fp16: bool,
                threads: int | None, int8: bool | Int8Policy = True) -> Backend:
    if name == "torch":
        return _torch(avatar_dir, device, tiers)
    if name == "onnxruntime":
        return _onnxruntime(avatar_dir, device, tiers, fp16, threads, int8)
    if name == "tensorrt":
        return _tensorrt(avatar_dir, "cuda" if device == "auto" else device, tiers, fp16)
    raise InputError(f"unknown backend {name!r}", f"one of {', '.join(BACKEND_NAMES)}")


def available_backends(avatar_dir: str | Path | None = None, device: str = "auto",
                       tiers: list[str] | None = None, fp16: bool = False,
                       threads: int | None = None,
                       int8: bool | Int8Policy = True) -> tuple[dict[str, Backend], dict[str, str]]:
    """Every backend that can run this avatar here, and why the others cannot (for `ideal bench --backend all`
    and the parity tests, which pass `int8=False`: FP32 parity is the contract, INT8 has its own figure)."""
    avatar_dir = resolve_avatar(avatar_dir)
    ok: dict[str, Backend] = {}
    why: dict[str, str] = {}
    for name in BACKEND_NAMES:
        try:
            ok[name] = _create_one(name, avatar_dir, device, tiers, fp16, threads, int8)
        except BackendError as exc:
            why[name] = str(exc)
    return ok, why
