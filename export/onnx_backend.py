"""ONNX Runtime backend: the exported stage graphs run by onnxruntime (CPU, CUDA, or its TensorRT provider).

onnxruntime is imported when a backend is created, never at module import. Inputs and intermediate tensors
are bound with IOBinding so that, on a GPU provider, the coarse pass stays on the device between stages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ideal.avatar.backend import Tier
from ideal.avatar.errors import BackendError
from ideal.export.artifacts import (CONDITION, ENGINES_DIR, FIELD, MOUTH, REFINE, ExportManifest, check_graph_file,
                              graph_key, load_export_manifest)
from ideal.export.pipeline import StagedBackend
from ideal.export.quantize import (Int8Policy, Int8Timing, cpu_signature, int8_key, int8_policy,
                                  load_int8_timings, save_int8_timings, time_graph_pair)

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError("onnxruntime is not installed",
                           "pip install 'ideal-nerf[cpu]' (CPU) or 'ideal-nerf[gpu]' (CUDA); never both") from exc
    return ort


@dataclass(frozen=True)
class OrtConfig:
    device: str = "auto"  # auto | cpu | cuda | tensorrt (ORT's TensorRT execution provider)
    threads: int | None = None  # intra-op threads on CPU; None = all cores
    fp16: bool = False  # TensorRT execution provider only
    # on the CPU provider, the INT8 refine graphs when the export has them (export/quantize.py): True / "auto" =
    # where measured faster on this CPU, "always", False / "never" = FP32
    int8: bool | Int8Policy = True
    device_id: int = 0


def provider_chain(ort: Any, cfg: OrtConfig, cache_dir: Path) -> list[Any]:
    """Providers to ask for, best first; `get_available_providers` lists GPU providers even without a GPU, so the
    caller checks what the session really got."""
    available = set(ort.get_available_providers())
    trt_opts = {"device_id": cfg.device_id, "trt_fp16_enable": cfg.fp16, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir / "ort-trt"), "trt_timing_cache_enable": True}
    cuda_opts = {"device_id": cfg.device_id}
    wanted: list[Any] = []
    if cfg.device in ("auto", "tensorrt") and TENSORRT_EP in available:
        wanted.append((TENSORRT_EP, trt_opts))
    if cfg.device in ("auto", "cuda", "tensorrt") and CUDA in available:
        wanted.append((CUDA, cuda_opts))
    if cfg.device in ("auto", "cpu"):
        wanted.append(CPU)
    if not wanted:
        raise BackendError(f"onnxruntime here has no {cfg.device} provider (available: {', '.join(sorted(available))})",
                           "pip install 'ideal-nerf[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU, "
                           "or use --device cpu")
    return wanted


class OnnxRuntimeBackend(StagedBackend):
    """`avatar.backend.Backend` over the exported graphs of one avatar."""

    def __init__(self, avatar_dir: str | Path, tiers: list[str] | None = None, config: OrtConfig = OrtConfig(),
                 export_dir: str | Path | None = None) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        self.avatar_dir = Path(avatar_dir)
        directory, manifest = load_export_manifest(self.avatar_dir, export_dir)
        self.export_dir, self.export_manifest = directory, manifest
        all_tiers = {k: Tier.from_dict(v) for k, v in manifest.tiers.items()}
        if tiers:
            unknown = [t for t in tiers if t not in all_tiers]
            if unknown:
                raise BackendError(f"{directory}: tiers {', '.join(unknown)} were not exported (have "
                                   f"{', '.join(all_tiers)})", f"run `ideal export {self.avatar_dir} --tiers "
                                   f"{' '.join(tiers)}`")
            all_tiers = {k: all_tiers[k] for k in tiers}
        super().__init__(all_tiers, manifest.graphs[graph_key(CONDITION)].inputs)
        self.config = config
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if config.threads:
            opts.intra_op_num_threads = config.threads
            opts.inter_op_num_threads = 1
        # idle worker threads sleep instead of spinning: a streamer waits for the frame clock between renders,
        # and spinning threads steal the CPU the audio front end and the encoder need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = provider_chain(ort, config, directory / ENGINES_DIR)
        if any(isinstance(p, tuple) and p[0] == TENSORRT_EP for p in providers):
            os.makedirs(directory / ENGINES_DIR / "ort-trt", exist_ok=True)
        keys = [graph_key(CONDITION)] + [graph_key(FIELD, t) for t in all_tiers] + \
               [graph_key(REFINE, t) for t in all_tiers]
        self._sessions = {k: self._open(k, manifest, opts, providers) for k in keys}
        self.graph_files = {k: k for k in keys}
        self.int8_timings: dict[str, Any] = {}
        # the INT8 graphs are CPU kernels; GPU providers run the FP32 graphs
        if providers[0] == CPU:
            self._choose_int8(int8_policy(config.int8), manifest, opts, providers)
        self.providers = self._sessions[graph_key(CONDITION)].get_providers()
        if config.device in ("cuda", "tensorrt") and self.providers[0] == CPU:
            raise BackendError(f"onnxruntime could not start its {config.device} provider here (it fell back to CPU)",
                               "check the NVIDIA driver and that onnxruntime-gpu matches the CUDA version, "
                               "or use --device cpu")
        self._device_type = "cpu" if self.providers[0] == CPU else "cuda"
        self.name = "onnxruntime"
        self.device = {CPU: "cpu", CUDA: "cuda", TENSORRT_EP: "tensorrt-ep"}.get(self.providers[0], self.providers[0])
        self._mouth: Any = None  # an onnxruntime session, opened on first use
        log.info("onnxruntime %s backend for %s (providers %s; refiners %s)", self.device, self.avatar_dir,
                 ", ".join(self.providers), ", ".join(f"{t} {p}" for t, p in self.precision.items()))

    def _choose_int8(self, policy: Int8Policy, manifest: ExportManifest, opts: Any, providers: list[Any]) -> None:
        """Swap each refine stage to its INT8 graph where the policy says so: "always", or "auto" when it was
        measured faster on this CPU (timed once per machine and remembered beside the graphs)."""
        if policy == "never":
            return
        signature = cpu_signature(self.config.threads)
        known = load_int8_timings(self.export_dir, signature)
        measured: dict[str, Int8Timing] = {}
        for key in [k for k in self.graph_files if k.startswith(REFINE + ".") and int8_key(k) in manifest.graphs]:
            timing = known.get(key) if policy == "auto" else None
            if timing is not None and not timing.worth_it:  # known slower here: no INT8 session to open
                self.int8_timings[key] = timing
                continue
            quantized = self._open(int8_key(key), manifest, opts, providers)
            if policy == "auto" and timing is None:
                timing = measured[key] = time_graph_pair(self._sessions[key], quantized)
                log.info("%s on this CPU: FP32 %.1f ms, INT8 %.1f ms (%.2fx)", key, timing.fp32_ms,
                         timing.int8_ms, timing.speedup)
            if timing is not None:
                self.int8_timings[key] = timing
                if not timing.worth_it:
                    continue
            self._sessions[key], self.graph_files[key] = quantized, int8_key(key)
        if measured:
            save_int8_timings(self.export_dir, signature, measured)

    @property
    def precision(self) -> dict[str, str]:
        """Per tier, the precision its refine graph runs in ("int8" | "fp32"), for reports."""
        return {t: ("int8" if self.graph_files[graph_key(REFINE, t)] == int8_key(graph_key(REFINE, t)) else "fp32")
                for t in self._tiers}

    def _open(self, key: str, manifest: ExportManifest, opts: Any, providers: list[Any]) -> Any:
        if key not in manifest.graphs:
            raise BackendError(f"{self.export_dir}: graph {key} was not exported",
                               f"run `ideal export {self.avatar_dir} --target onnx`")
        path = check_graph_file(self.export_dir, manifest.graphs[key], self.avatar_dir)
        try:
            return self._ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise BackendError(f"{path}: onnxruntime cannot load this graph ({str(exc).splitlines()[0][:200]})",
                               f"run `ideal export {self.avatar_dir} --target onnx`") from exc

    def _run_graph(self, key: str, feeds: dict[str, Any]) -> dict[str, Any]:
        session = self._sessions[key]
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        names = [o.name for o in session.get_outputs()]
        for name in names:
            binding.bind_output(name, self._device_type, self.config.device_id if self._device_type != "cpu" else 0)
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))

    def _to_host(self, value: Any) -> np.ndarray:
        return value.numpy() if hasattr(value, "numpy") else np.asarray(value)

    # -- the exported audio-to-mouth model ----------------------------------------------------------------
    def mouth(self, mouth_audio: np.ndarray) -> np.ndarray:
        """(B, W_mouth, D) features of the mouth model -> (B, 10) mouth slice, by the exported `mouth` graph."""
        if self._mouth is None:
            opts = self._ort.SessionOptions()
            if self.config.threads:
                opts.intra_op_num_threads = self.config.threads
            self._mouth = self._open(graph_key(MOUTH), self.export_manifest, opts,
                                     provider_chain(self._ort, self.config, self.export_dir / ENGINES_DIR))
        return self._mouth.run(None, {"mouth_audio": np.ascontiguousarray(mouth_audio, dtype=np.float32)})[0]
