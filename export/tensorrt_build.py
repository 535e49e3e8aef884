"""Building TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API).

One engine per graph (condition, mouth, field.<tier>, refine.<tier>), so the streamer keeps timing and
scheduling stages separately. Each engine has one optimisation profile spanning the exported batch range
(min/opt/max), FP16 when asked (with the volume-rendering accumulation -- CumSum, Log, Exp -- kept in FP32,
where FP16 loses transmittance), and a timing cache shared by all builds for this GPU and TensorRT version.

Engines are named by GPU model, compute capability, TensorRT version and precision, with a JSON sidecar holding
the sha256 of the source graph and of the engine: an engine for another GPU/version, or built from an older
graph, is rebuilt here and refused (never silently used) by `export.tensorrt_backend`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from ideal.avatar.errors import BackendError
from ideal.avatar.manifest import sha256_file
from ideal.export.artifacts import (ENGINES_DIR, EngineTarget, ExportManifest, check_graph_file, engine_status,
                              load_export_manifest, sidecar_path)

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_GB = 4.0  # TensorRT builder workspace

# Layers kept in FP32 under --fp16: the transmittance accumulation exp(cumsum(log(1 - a))) and the softmax
# normalisation lose too much in half precision (names follow the ONNX node names the parser keeps).
FP32_LAYER_PATTERN = re.compile(r"CumSum|Log|Exp|Softmax|ReduceSum", re.IGNORECASE)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("TensorRT is not installed",
                           "on a machine with an NVIDIA GPU: pip install 'ideal-nerf[trt]' (NVIDIA's wheels), "
                           "then re-run `ideal export AVATAR --target tensorrt`") from exc
    return trt


def current_target(trt: Any, fp16: bool, device: int = 0) -> EngineTarget:
    """The GPU and TensorRT version engines are built for (and must match when loaded)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError("no NVIDIA GPU visible to PyTorch, so no TensorRT engine can be built or run here",
                           "use --target onnx / --backend onnxruntime, or run on a machine with a GPU and a CUDA "
                           "build of PyTorch")
    return EngineTarget(gpu_name=torch.cuda.get_device_name(device),
                        compute_capability=tuple(torch.cuda.get_device_capability(device)),
                        trt_version=str(trt.__version__), fp16=fp16)


def _parse(trt: Any, builder: Any, onnx_path: Path, logger: Any) -> tuple[Any, Any]:
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{onnx_path}: TensorRT cannot parse this graph ({errors[:300]})",
                           "re-export it with `ideal export AVATAR --target onnx` and report the error if it persists")
    return network, parser


def _keep_fp32(trt: Any, network: Any) -> int:
    kept = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if FP32_LAYER_PATTERN.search(layer.name):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            kept += 1
    return kept


def build_engine(trt: Any, onnx_path: Path, engine_path: Path, target: EngineTarget, batch: dict[str, int],
                 onnx_sha256: str, workspace_bytes: int = 4 << 30) -> Path:
    """Build one engine; writes it, then its sidecar (the sidecar last, so a crash never leaves a usable-looking
    engine)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, onnx_path, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if target.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        log.info("%s: %d accumulation layers kept in FP32", onnx_path.name, _keep_fp32(trt, network))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(int(d) for d in tensor.shape)[1:]
        profile.set_shape(tensor.name, (batch["min"], *rest), (batch["opt"], *rest), (batch["max"], *rest))
    config.add_optimization_profile(profile)

    cache_path = engine_path.parent / target.timing_cache_file()
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)",
                           "try without --fp16, or a larger --workspace-gb")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(engine_path).unlink(missing_ok=True)
    engine_path.write_bytes(memoryview(serialized))
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    meta = {"graph": onnx_path.name, "onnx_sha256": onnx_sha256, "engine_sha256": sha256_file(engine_path),
            "gpu_name": target.gpu_name, "compute_capability": list(target.compute_capability),
            "trt_version": target.trt_version, "precision": target.precision, "batch": batch,
            "build_seconds": round(time.perf_counter() - start, 2)}
    sidecar_path(engine_path).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built %s in %.1f s", engine_path.name, meta["build_seconds"])
    return engine_path


def build_engines(avatar_dir: str | Path, fp16: bool = False, tiers: list[str] | None = None, force: bool = False,
                  workspace_gb: float = DEFAULT_WORKSPACE_GB, device: int = 0) -> list[Path]:
    """Engines for every exported graph (of `tiers`, when given) on this GPU; current ones are kept, missing,
    stale or corrupt ones are (re)built. Needs the ONNX export first."""
    trt = import_tensorrt()
    target = current_target(trt, fp16, device)
    avatar_dir = Path(avatar_dir)
    directory, manifest = load_export_manifest(avatar_dir)
    engine_dir = directory / ENGINES_DIR
    out: list[Path] = []
    for key, info in selected_graphs(manifest, tiers).items():
        onnx_path = check_graph_file(directory, info, avatar_dir)
        status, why = engine_status(engine_dir, key, target, info.sha256)
        path = engine_dir / target.engine_file(key)
        if status == "ok" and not force:
            log.info("%s is current", path.name)
        else:
            log.info("building %s: %s", path.name, why or "forced")
            build_engine(trt, onnx_path, path, target, manifest.batch, info.sha256, int(workspace_gb * (1 << 30)))
        out.append(path)
    return out


def selected_graphs(manifest: ExportManifest, tiers: list[str] | None) -> dict:
    """Graphs of the given tiers plus the tier-independent ones (condition, mouth)."""
    return {k: g for k, g in manifest.graphs.items() if g.tier is None or not tiers or g.tier in tiers}
