"""TensorRT engine naming and staleness, lazy imports, and the errors on machines that cannot build engines.

The engine build and run themselves need an NVIDIA GPU with TensorRT: those tests are marked `gpu` and skip
elsewhere with the reason (TensorRT cannot be installed on the CPU development machines)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ideal.avatar.errors import BackendError
from ideal.avatar.manifest import sha256_file
from ideal.export.artifacts import EngineTarget, engine_status, sidecar_path, slug

TARGET = EngineTarget(gpu_name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9), trt_version="10.3.0", fp16=True)


def _has_gpu_trt() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt not installed"
    import torch

    if not torch.cuda.is_available():
        return "no NVIDIA GPU"
    return None


def test_engine_name_says_gpu_capability_version_precision():
    name = TARGET.engine_file("field.coarse")
    assert name == "field.coarse.nvidia-geforce-rtx-4090.sm89.trt10.3.0.fp16.engine"
    assert TARGET.timing_cache_file() == "timing.nvidia-geforce-rtx-4090.sm89.trt10.3.0.cache"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def _write_engine(tmp_path, target: EngineTarget, key: str, graph_sha: str, payload: bytes = b"engine-bytes") -> None:
    path = tmp_path / target.engine_file(key)
    path.write_bytes(payload)
    sidecar_path(path).write_text(json.dumps({
        "onnx_sha256": graph_sha, "engine_sha256": sha256_file(path), "gpu_name": target.gpu_name,
        "compute_capability": list(target.compute_capability), "trt_version": target.trt_version,
        "precision": target.precision}))


def test_engine_status_ok_missing_stale_corrupt(tmp_path):
    _write_engine(tmp_path, TARGET, "field.coarse", "a" * 64)
    assert engine_status(tmp_path, "field.coarse", TARGET, "a" * 64) == ("ok", "")

    status, why = engine_status(tmp_path, "field.coarse", TARGET, "b" * 64)  # graph re-exported since
    assert status == "stale" and "another version of field.coarse.onnx" in why

    other_gpu = EngineTarget("NVIDIA A100-SXM4-40GB", (8, 0), "10.3.0", True)
    status, why = engine_status(tmp_path, "field.coarse", other_gpu, "a" * 64)
    assert status == "missing" and TARGET.engine_file("field.coarse") in why  # names the engine it found

    newer_trt = EngineTarget(TARGET.gpu_name, TARGET.compute_capability, "10.4.0", True)
    assert engine_status(tmp_path, "field.coarse", newer_trt, "a" * 64)[0] == "missing"

    fp32 = EngineTarget(TARGET.gpu_name, TARGET.compute_capability, TARGET.trt_version, False)
    assert engine_status(tmp_path, "field.coarse", fp32, "a" * 64)[0] == "missing"

    (tmp_path / TARGET.engine_file("field.coarse")).write_bytes(b"engine-bytes truncated")
    status, why = engine_status(tmp_path, "field.coarse", TARGET, "a" * 64)
    assert status == "corrupt" and "checksum" in why

    sidecar_path(tmp_path / TARGET.engine_file("field.coarse")).unlink()
    assert engine_status(tmp_path, "field.coarse", TARGET, "a" * 64)[0] == "stale"


def test_engine_renamed_from_another_gpu_is_refused(tmp_path):
    """Copying an engine to this GPU's name does not make it usable: the sidecar still names its GPU."""
    other = EngineTarget("NVIDIA A100-SXM4-40GB", (8, 0), "10.3.0", True)
    _write_engine(tmp_path, other, "condition", "c" * 64)
    src = tmp_path / other.engine_file("condition")
    src.rename(tmp_path / TARGET.engine_file("condition"))
    sidecar_path(src).rename(sidecar_path(tmp_path / TARGET.engine_file("condition")))
    status, why = engine_status(tmp_path, "condition", TARGET, "c" * 64)
    assert status == "stale" and "A100" in why


def test_check_engines_error_says_what_to_run(tmp_path):
    from ideal.export.tensorrt_backend import check_engines

    _write_engine(tmp_path, TARGET, "condition", "c" * 64)
    with pytest.raises(BackendError) as err:
        check_engines(tmp_path, ["condition", "field.coarse"], TARGET,
                      {"condition": "c" * 64, "field.coarse": "f" * 64}, tmp_path / "my_avatar")
    text = str(err.value)
    assert "field.coarse: missing" in text and "ideal export" in text and "--target tensorrt --fp16" in text


def test_importing_export_needs_no_accelerator_library():
    code = ("import sys, export, export.backends, export.cli, export.onnx_backend, export.tensorrt_backend, "
            "export.tensorrt_build, export.onnx_export, ideal.cli; ideal.cli.build_parser(); "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'cuda') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.skipif(_has_gpu_trt() is None, reason="TensorRT and a GPU are present: the no-TensorRT error path "
                                                   "does not apply")
def test_tensorrt_target_on_a_machine_without_it_says_what_to_do():
    from ideal.export.tensorrt_build import current_target, import_tensorrt

    with pytest.raises(BackendError) as err:
        current_target(import_tensorrt(), fp16=False)
    assert "TensorRT is not installed" in str(err.value) or "no NVIDIA GPU" in str(err.value)
    assert "ideal-nerf[trt]" in str(err.value) or "--target onnx" in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(_has_gpu_trt() is not None, reason=f"no NVIDIA GPU / tensorrt not installed ({_has_gpu_trt()})")
def test_tensorrt_target_names_this_gpu():
    import tensorrt as trt
    import torch

    from ideal.export.tensorrt_build import current_target

    target = current_target(trt, fp16=True)
    assert target.trt_version == trt.__version__
    assert target.compute_capability == tuple(torch.cuda.get_device_capability(0))
    assert slug(torch.cuda.get_device_name(0)) in target.engine_file("condition")
