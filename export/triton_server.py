"""A local Triton Inference Server for an avatar, for development and tests (PyTriton).

  ideal triton                                    the built-in avatar on gRPC 8001, HTTP 8000, metrics 8002
  ideal triton --avatar A --grpc-port 9001 --http-port 9000 --metrics-port 9002 --tiers fast

PyTriton (`pip install 'ideal-nerf[triton]'`) bundles a real Triton server (2.51) that runs Python models only;
their code runs in this process. Here that code is the avatar's ONNX Runtime graphs (`OnnxRuntimeBackend`), so
`NS.render.<tier>` does in one Python model what the exported repository's ensemble does in four ONNX Runtime
models (the stage graphs, then the crop packed to RGBA8). Names, tensors, batching and parameters come from
`export.triton_models.model_specs`, as the repository's config.pbtxt files do: a client (`--render-url
grpc://127.0.0.1:8001`) cannot tell the two apart. Requests of every client batch in Triton's dynamic batcher;
the metrics endpoint (`http://HOST:METRICS/metrics`) and the gRPC statistics extension report the batches formed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

# PyTriton restricts these endpoints behind a generated token by default; statistics stay open (as on a stock
# Triton) so `ideal bench` and operators can read the batch sizes formed
DTYPES = {"FP32": np.float32, "UINT8": np.uint8}
RESTRICTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]


def import_pytriton() -> Any:
    from ideal.avatar.errors import BackendError

    try:
        import pytriton.triton as triton_module
    except ImportError as exc:
        raise BackendError("PyTriton is not installed", "pip install 'ideal-nerf[triton]'") from exc
    return triton_module


def libpython_dir() -> str:
    """PyTriton's Python backend stub loads the running Python's libpython; a pyenv build keeps it off the
    loader's default path."""
    return str(sysconfig.get_config_var("LIBDIR") or Path(sys.executable).resolve().parent.parent / "lib")


def _render_fn(backend: Any, tier: str) -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    from ideal.export.triton_models import pack_rgba

    @batch
    def infer(audio: np.ndarray, expression: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
        rgb, alpha, _ = backend.run_stages(audio, expression, pose, tier)
        return {"rgba": pack_rgba(rgb, alpha)}

    return infer


def _pack_fn() -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    from ideal.export.triton_models import pack_rgba

    @batch
    def infer(rgb: np.ndarray, alpha: np.ndarray) -> dict[str, np.ndarray]:
        return {"rgba": pack_rgba(rgb, alpha)}

    return infer


def _stage_fn(backend: Any, graph: str, outputs: list[str]) -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    @batch
    def infer(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        out = backend._run_graph(graph, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return {k: np.ascontiguousarray(backend._to_host(out[k])) for k in outputs}

    return infer


class LocalTriton:
    """PyTriton serving one avatar's models; `start()` returns once every model is loaded."""

    def __init__(self, avatar: str | Path | None = None, grpc_port: int = 8001, http_port: int = 8000,
                 metrics_port: int = 8002, tiers: list[str] | None = None, threads: int | None = None,
                 int8: bool = True, stage_models: bool = False, max_batch_size: int | None = None,
                 queue_delay_us: int | None = None, address: str = "127.0.0.1",
                 workspace: str | Path | None = None) -> None:
        from ideal.avatar.manifest import resolve_avatar
        from ideal.export.onnx_backend import OnnxRuntimeBackend, OrtConfig
        from ideal.export.triton_models import DEFAULT_QUEUE_DELAY_US, model_specs, namespace_for

        self._pt = import_pytriton()
        self.avatar_dir = resolve_avatar(avatar)
        self.ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.address = address
        self.queue_delay_us = DEFAULT_QUEUE_DELAY_US if queue_delay_us is None else queue_delay_us
        self.backend = OnnxRuntimeBackend(self.avatar_dir, tiers, OrtConfig(device="cpu", threads=threads, int8=int8))
        self.namespace = namespace_for(self.avatar_dir)
        specs = model_specs(self.backend.export_manifest, self.namespace, avatar=self.namespace,
                            tiers=list(self.backend.tiers), max_batch_size=max_batch_size)
        self.specs = [s for s in specs if s.is_ensemble or stage_models]
        self._triton: Any = None
        self.workspace = workspace  # PyTriton's sockets, model store and server copy (~22 MB); None: a temp dir

    def start(self) -> None:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        lib = libpython_dir()
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if lib not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([lib, *paths])
        pt = self._pt
        config = pt.TritonConfig(grpc_port=self.ports["grpc"], http_port=self.ports["http"],
                                 metrics_port=self.ports["metrics"], grpc_address=self.address,
                                 http_address=self.address, log_verbose=0, exit_timeout_secs=2)
        security = pt.TritonSecurityConfig(restricted_endpoints=list(RESTRICTED_ENDPOINTS))
        triton = pt.Triton(config=config, security_config=security,
                           workspace=str(self.workspace) if self.workspace else None)
        try:
            for spec in self.specs:
                if spec.is_ensemble:
                    fn = _render_fn(self.backend, spec.tier)
                elif spec.builtin is not None:
                    fn = _pack_fn()
                else:
                    fn = _stage_fn(self.backend, spec.graph, [t.name for t in spec.outputs])
                triton.bind(model_name=spec.name, infer_func=fn,
                            inputs=[Tensor(name=t.name, dtype=DTYPES[t.dtype], shape=t.dims) for t in spec.inputs],
                            outputs=[Tensor(name=t.name, dtype=DTYPES[t.dtype], shape=t.dims) for t in spec.outputs],
                            config=ModelConfig(max_batch_size=spec.max_batch_size, batcher=DynamicBatcher(
                                max_queue_delay_microseconds=self.queue_delay_us)), strict=True)
            _add_parameters(triton, {s.name: s.parameters for s in self.specs})
            triton.run()
        except BaseException:
            triton.stop()
            raise
        self._triton = triton

    @property
    def url(self) -> str:
        return f"grpc://{self.address}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.ports['metrics']}/metrics"

    def stop(self) -> None:
        if self._triton is not None:
            self._triton.stop()
            self._triton = None

    def __enter__(self) -> "LocalTriton":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _add_parameters(triton: Any, params: dict[str, dict[str, str]]) -> None:
    """Put each model's ideal_* parameters into the config PyTriton writes (its user API has no field for
    them: the models' generated Triton config is amended before `run()` writes it; PyTriton 0.7)."""
    from ideal.avatar.errors import BackendError

    try:
        models = list(triton._model_manager.models)
        for model in models:
            model._get_triton_model_config().backend_parameters.update(params[model.model_name])
    except (AttributeError, KeyError) as exc:
        raise BackendError(f"this PyTriton version cannot carry model parameters ({exc})",
                           "install the version ideal-nerf's [triton] extra pins") from exc


# --- the command -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalTritonConfig:
    """`ideal triton`'s options (ideal/configcli.py derives them from the fields' help)."""

    avatar: str = field(default="default", metadata={"help": "avatar dir (default: the built-in avatar)"})
    grpc_port: int = field(default=8001, metadata={"help": "gRPC port"})
    http_port: int = field(default=8000, metadata={"help": "HTTP port"})
    metrics_port: int = field(default=8002, metadata={"help": "Prometheus metrics port"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0: every interface)"})
    tiers: list[str] | None = field(default=None, metadata={"help": "serve only these tiers (none: all exported)"})
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime intra-op threads (none: all cores)"})
    int8: bool = field(default=True, metadata={
        "help": "run the INT8 refine graphs where measured faster on this CPU (off: the FP32 ones)"})
    stage_models: bool = field(default=False, metadata={
        "help": "also serve the per-stage models (NS.condition, NS.field.T, NS.refine.T, NS.pack.T)"})
    max_batch: int | None = field(default=None, metadata={"help": "largest batch Triton forms (none: 16)"})
    queue_delay_us: int | None = field(default=None, metadata={
        "help": "dynamic batching: longest wait for a fuller batch, microseconds (none: 2000)"})
    workspace: str | None = field(default=None, metadata={
        "help": "PyTriton's working dir, a short path (it holds Unix sockets) that does not exist yet; removed at a "
                "clean stop (none: a new one under ~/.cache/pytriton)"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ideal.configcli import add_options

    parser.set_defaults(_triton_options=add_options(parser, LocalTritonConfig,
                                                    metavars={"tiers": "TIER", "workspace": "DIR"}))


def run(args: argparse.Namespace) -> int:
    from ideal.avatar.errors import InputError
    from ideal.export.backends import ensure_onnx_export

    cfg: LocalTritonConfig = args._triton_options.build(args)
    for name in ("grpc_port", "http_port", "metrics_port"):
        port = getattr(cfg, name)
        if not 1 <= port <= 65535:
            raise InputError(f"--{name.replace('_', '-')} {port}: not a TCP port", "use 1-65535")
    if cfg.workspace and Path(cfg.workspace).exists():
        raise InputError(f"--workspace {cfg.workspace}: already exists", "give a path that does not exist yet")
    import_pytriton()
    avatar = None if cfg.avatar == "default" else cfg.avatar
    status = ensure_onnx_export(avatar)
    if status not in ("current", "exported"):
        raise InputError(f"{cfg.avatar}: cannot export the ONNX graphs ({status})",
                         "install 'ideal-nerf[cpu]' and run `ideal export AVATAR`")
    server = LocalTriton(avatar, cfg.grpc_port, cfg.http_port, cfg.metrics_port, cfg.tiers, cfg.threads, cfg.int8,
                         cfg.stage_models, cfg.max_batch, cfg.queue_delay_us, cfg.host, cfg.workspace)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        print(f"ideal triton: serving {', '.join(s.name for s in server.specs)} on {server.url} "
              f"(metrics {server.metrics_url}; Ctrl-C to stop)", flush=True)
        stop.wait()
    finally:
        server.stop()
    print("ideal triton: stopped", flush=True)
    return 0
