"""GPU backends against PyTorch on the built-in avatar: TensorRT engines (FP32 within 2/255; FP16 within the
tolerance docs/export.md states) and onnxruntime's CUDA provider. Skipped, with the reason, on machines without
an NVIDIA GPU or without TensorRT / onnxruntime-gpu (all the CPU development machines of this project)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

FP32_TOL = 2.0 / 255.0
FP16_TOL = 8.0 / 255.0  # stated, not yet measured: no GPU was available while this was written


def _cuda() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return None if torch.cuda.is_available() else "no NVIDIA GPU"


def _trt() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt not installed"
    return _cuda()


@pytest.fixture(scope="module")
def gpu_avatar(default_avatar: Path, new_speech_wav, tmp_path_factory):
    reason = _cuda()
    if reason:
        pytest.skip(f"no NVIDIA GPU / tensorrt not installed ({reason})")
    from ideal.avatar.audio.features import compute_features, windows_for_frames
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.loading import load_avatar
    from ideal.export.onnx_export import export_avatar

    dst = tmp_path_factory.mktemp("gpu") / "avatar"
    shutil.copytree(default_avatar, dst, ignore=shutil.ignore_patterns("exported"))
    export_avatar(dst)
    loaded = load_avatar(dst, device="cuda")
    mel = compute_features(load_audio(new_speech_wav)[:16000 * 3], loaded.mel_config)
    idx = np.array([20, 40, 60])
    windows = windows_for_frames(mel, 61, loaded.fps, loaded.window, loaded.mel_config)[idx]
    return dst, loaded, (windows, loaded.expression_track[idx], loaded.pose_track[idx])


@pytest.mark.skipif(_trt() is not None, reason=f"no NVIDIA GPU / tensorrt not installed ({_trt()})")
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_matches_pytorch(gpu_avatar, fp16):
    from ideal.export.tensorrt_backend import TensorRTBackend
    from ideal.export.tensorrt_build import build_engines

    dst, loaded, inputs = gpu_avatar
    engines = build_engines(dst, fp16=fp16)
    assert all(p.exists() and p.with_suffix(".json").exists() for p in engines)
    again = build_engines(dst, fp16=fp16)  # current engines are kept, not rebuilt
    assert [p.stat().st_mtime for p in again] == [p.stat().st_mtime for p in engines]
    backend = TensorRTBackend(dst, fp16=fp16)
    tol = FP16_TOL if fp16 else FP32_TOL
    for tier in loaded.tiers:
        ref = loaded.backend.render(*inputs, tier)
        got = backend.render(*inputs, tier)
        diff = max(float(np.abs(got.rgb - ref.rgb).max()), float(np.abs(got.alpha - ref.alpha).max()))
        print(f"tensorrt {'fp16' if fp16 else 'fp32'} {tier}: max abs diff {diff:.2e} ({diff * 255:.2f}/255)")
        assert diff <= tol


@pytest.mark.skipif(_cuda() is not None, reason=f"no NVIDIA GPU ({_cuda()})")
def test_onnxruntime_cuda_matches_pytorch(gpu_avatar):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu not installed (pip install 'ideal-nerf[gpu]')")
    from ideal.export.onnx_backend import OnnxRuntimeBackend, OrtConfig

    dst, loaded, inputs = gpu_avatar
    backend = OnnxRuntimeBackend(dst, config=OrtConfig(device="cuda"))
    assert backend.providers[0] == "CUDAExecutionProvider"
    for tier in loaded.tiers:
        ref = loaded.backend.render(*inputs, tier)
        got = backend.render(*inputs, tier)
        assert float(np.abs(got.rgb - ref.rgb).max()) <= FP32_TOL
        assert float(np.abs(got.alpha - ref.alpha).max()) <= FP32_TOL
