"""TensorRT backend: the per-graph engines of `export.tensorrt_build`, run with TensorRT 10's tensor API
(`set_input_shape` / `set_tensor_address` / `execute_async_v3`) on PyTorch CUDA tensors, one CUDA stream.

Before anything is deserialised every engine is checked against this GPU, this TensorRT version and the
current graph (`export.artifacts.engine_status`): a missing, stale or corrupt engine raises a BackendError that
says what to run; it is never silently used or silently rebuilt at load time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ideal.avatar.backend import Tier
from ideal.avatar.errors import BackendError
from ideal.export.artifacts import (CONDITION, ENGINES_DIR, FIELD, REFINE, EngineTarget, graph_key,
                              load_export_manifest)
from ideal.export.artifacts import engine_status
from ideal.export.pipeline import StagedBackend
from ideal.export.tensorrt_build import current_target, import_tensorrt

log = logging.getLogger(__name__)


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool}
    return table[dtype]


class _EngineRunner:
    """One deserialised engine and its execution context."""

    def __init__(self, trt: Any, runtime: Any, path: Path) -> None:
        self._trt = trt
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT cannot deserialise this engine (corrupt or built by another "
                               "TensorRT version)", "re-run `ideal export AVATAR --target tensorrt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, feeds: dict[str, Any], stream: Any) -> dict[str, Any]:
        import torch

        keep = []
        for name in self.inputs:
            t = feeds[name]
            if not isinstance(t, torch.Tensor):
                t = torch.from_numpy(np.ascontiguousarray(t))
            want = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            t = t.to(device="cuda", dtype=want, non_blocking=True).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=_torch_dtype(self._trt, self.engine.get_tensor_dtype(name)), device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outs[name] = out
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execution failed", "see the TensorRT log; re-build the engines")
        return outs


class TensorRTBackend(StagedBackend):
    """`avatar.backend.Backend` over prebuilt TensorRT engines of one avatar."""

    def __init__(self, avatar_dir: str | Path, tiers: list[str] | None = None, fp16: bool = False,
                 device: int = 0) -> None:
        trt = import_tensorrt()
        import torch

        self.avatar_dir = Path(avatar_dir)
        directory, manifest = load_export_manifest(self.avatar_dir)
        target = current_target(trt, fp16, device)
        all_tiers = {k: Tier.from_dict(v) for k, v in manifest.tiers.items()}
        if tiers:
            all_tiers = {k: v for k, v in all_tiers.items() if k in tiers}
        super().__init__(all_tiers, manifest.graphs[graph_key(CONDITION)].inputs)
        keys = [graph_key(CONDITION)] + [graph_key(FIELD, t) for t in all_tiers] + \
               [graph_key(REFINE, t) for t in all_tiers]
        engine_dir = directory / ENGINES_DIR
        check_engines(engine_dir, keys, target, {k: manifest.graphs[k].sha256 for k in keys}, self.avatar_dir)
        torch.cuda.set_device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._runners = {k: _EngineRunner(trt, runtime, engine_dir / target.engine_file(k)) for k in keys}
        self._stream = torch.cuda.Stream()
        self.target = target
        self.name = "tensorrt"
        self.device = f"cuda:{device}"
        log.info("tensorrt %s backend for %s (%s)", target.precision, self.avatar_dir, target.tag)

    def _run_graph(self, key: str, feeds: dict[str, Any]) -> dict[str, Any]:
        import torch

        with torch.cuda.stream(self._stream):
            return self._runners[key](feeds, self._stream)

    def _synchronize(self) -> None:
        self._stream.synchronize()

    def _to_host(self, value: Any) -> np.ndarray:
        return value.float().cpu().numpy()


def check_engines(engine_dir: Path, keys: list[str], target: EngineTarget, graph_sha: dict[str, str],
                  avatar_dir: Path) -> None:
    """Refuse to run unless every engine is current for this GPU, TensorRT version and graph."""
    problems = []
    for key in keys:
        status, why = engine_status(engine_dir, key, target, graph_sha[key])
        if status != "ok":
            problems.append(f"{key}: {status} ({why})")
    if problems:
        flag = " --fp16" if target.fp16 else ""
        raise BackendError(f"{engine_dir}: TensorRT engines not usable here: " + "; ".join(problems),
                           f"run `ideal export {avatar_dir} --target tensorrt{flag}`")
