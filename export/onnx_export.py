"""ONNX graphs of a trained avatar, one per stage, so the streamer can time and schedule them:

    condition      audio (B,W,M), expression (B,E)         -> cond (B,T,C)        encoders + EAA
    mouth          mouth_audio (B,Wm,D)                    -> mouth (B,10)        audio-to-mouth model
    field.<tier>   cond (B,T,C), pose (B,3,4)              -> rgb, alpha, feat at r x r (field + volume rendering)
    refine.<tier>  coarse_rgb, coarse_alpha, coarse_feat   -> rgb (B,3,S,S), alpha (B,1,S,S)

Frame size is fixed per tier; the batch B is the one dynamic axis (several sessions share a call). Every graph
is checked with the ONNX checker (full check, with shape inference) and, when onnxruntime is installed, run
against the PyTorch stage on real poses of the avatar at batch 1 (the graphs are traced at batch 2, so this also
checks that the batch is really dynamic), the largest difference recorded in `export.json` (`validation`).

The default exporter is torch's TorchScript-based one at opset 17 (0.2 s per graph here, and TensorRT 10
parses opset 17); `--exporter dynamo` uses torch.export at opset 20 (seconds per graph).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, get_args

import numpy as np

from ideal.avatar.backend import Tier
from ideal.avatar.errors import BackendError, InputError
from ideal.avatar.expression import EXPRESSION_DIM
from ideal.avatar.avatar_manifest import load_avatar_manifest
from ideal.avatar.manifest import sha256_file
from ideal.export.artifacts import (CONDITION, EXPORT_MANIFEST, FIELD, MOUTH, REFINE, ExportManifest, GraphInfo,
                              avatar_fingerprint, export_dir_for, graph_file, graph_key)
from ideal.export.quantize import INT8_TIMINGS

log = logging.getLogger(__name__)

PlaneLookup = Literal["gather", "grid_sample"]
PLANE_LOOKUPS: tuple[str, ...] = get_args(PlaneLookup)


@dataclass(frozen=True)
class ExportConfig:
    """The fields with a help text are `ideal export`'s options (ideal/configcli.py derives them)."""

    opset: int = 17
    exporter: Literal["legacy", "dynamo"] = field(default="legacy", metadata={
        "help": "torch ONNX exporter: legacy (TorchScript, opset 17, fast) or dynamo (torch.export, opset 20)"})
    batch_min: int = 1
    batch_opt: int = field(default=4, metadata={"help": "batch TensorRT optimises for"})
    batch_max: int = field(default=16, metadata={"help": "largest batch (sessions per call)"})
    tiers: tuple[str, ...] | None = field(default=None, metadata={"help": "only these quality tiers (none: all)"})
    mouth: bool = field(default=True, metadata={"help": "also export the shipped audio-to-mouth model's graph"})
    validate: bool = True  # compare each graph with PyTorch in onnxruntime (when installed)
    # "gather" (row gathers + lerps) is 2-3x faster than ONNX Runtime's CPU GridSample here
    plane_lookup: PlaneLookup = field(default="gather", metadata={
        "help": "tri-plane lookup in the field graphs: gather (fast in ONNX Runtime on CPU) or grid_sample (ONNX "
                "GridSample); both are validated against PyTorch's grid_sample"})
    int8: bool = field(default=True, metadata={
        "help": "also write INT8 refine graphs (export/quantize.py) for ONNX Runtime on CPU, which then runs them; "
                "the FP32 ones are always written"})
    int8_frames: int = 24  # renders of the avatar's own pose track: half calibrate the ranges, half check them

    @property
    def batch(self) -> dict[str, int]:
        return {"min": self.batch_min, "opt": self.batch_opt, "max": self.batch_max}


@dataclass
class StageSpec:
    """What to export for one graph: the module, example inputs (traced at batch 2), I/O names."""

    key: str
    module: Any  # torch.nn.Module
    inputs: dict[str, Any]  # name -> example tensor (B first)
    outputs: list[str]
    stage: str
    tier: str | None = None


def _shape(arr: Any) -> list[int | str]:
    return ["B", *[int(d) for d in tuple(arr.shape)[1:]]]


def export_graph(spec: StageSpec, path: Path, cfg: ExportConfig) -> GraphInfo:
    """Export one stage to `path` (atomically: a temporary file renamed into place) and check it."""
    import onnx
    import torch

    tmp = path.with_suffix(".onnx.partial")
    names = list(spec.inputs)
    args = tuple(spec.inputs[n] for n in names)
    spec.module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is one fused op no exporter knows; the composite path is the
    # same maths (MatMul/Softmax in the graph).
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints that are static per tier anyway
        if cfg.exporter == "legacy":
            axes = {n: {0: "B"} for n in names + spec.outputs}
            torch.onnx.export(spec.module, args, str(tmp), dynamo=False, opset_version=cfg.opset,
                              input_names=names, output_names=spec.outputs, dynamic_axes=axes,
                              do_constant_folding=True)
        elif cfg.exporter == "dynamo":
            batch = torch.export.Dim("B", min=cfg.batch_min, max=max(cfg.batch_max, 2))
            params = list(__import__("inspect").signature(spec.module.forward).parameters)
            shapes = {p: {0: batch} for p in params[:len(names)]}
            torch.onnx.export(spec.module, args, str(tmp), dynamo=True, opset_version=max(cfg.opset, 18),
                              input_names=names, output_names=spec.outputs, dynamic_shapes=shapes,
                              external_data=False, verbose=False)
        else:
            raise InputError(f"unknown exporter {cfg.exporter!r}", "use legacy or dynamo")
    torch.backends.mha.set_fastpath_enabled(fastpath)
    with torch.no_grad():
        outs = spec.module(*args)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    _fix_output_shapes(tmp, {n: tuple(o.shape) for n, o in zip(spec.outputs, outs)})
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except onnx.checker.ValidationError as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"{spec.key}: the exported graph fails the ONNX checker ({str(exc)[:200]})",
                           "this is a bug in the model's export path; report it") from exc
    os.replace(tmp, path)
    return GraphInfo(file=path.name, sha256=sha256_file(path), stage=spec.stage, tier=spec.tier,
                     inputs={n: _shape(spec.inputs[n]) for n in names},
                     outputs={n: _shape(o) for n, o in zip(spec.outputs, outs)})


def _fix_output_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Write the outputs' true static sizes into the graph (only the batch stays symbolic, "B"): the tracer
    leaves sizes computed by reshapes symbolic, which would hide the fixed frame size from ONNX Runtime and
    TensorRT."""
    import onnx

    model = onnx.load(str(path))
    for value in model.graph.output:
        shape = shapes[value.name]
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for i, size in enumerate(shape):
            d = dims.add()
            if i == 0:
                d.dim_param = "B"
            else:
                d.dim_value = int(size)
    onnx.save(model, str(path))


def stage_specs(model: Any, tiers: dict[str, Tier], poses: np.ndarray, mouth_module: Any | None = None,
                mouth_input: tuple[int, int] | None = None, batch: int = 2) -> list[StageSpec]:
    """The graphs of one avatar. `model` is an `avatar.model.models.IdealNeRF`; `poses` (N,3,4) real poses of the
    avatar (from its pose track), so example inputs render the head; `mouth_input` = (window length, dim)."""
    import torch

    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, cfg.audio_window, cfg.n_mels, generator=gen)
    expression = 0.3 * torch.randn(batch, EXPRESSION_DIM, generator=gen)
    pose = torch.from_numpy(np.asarray(poses[:batch], dtype=np.float32))
    if pose.shape[0] < batch:
        pose = pose[:1].expand(batch, 3, 4).contiguous()
    specs = [StageSpec(graph_key(CONDITION), model.encoder, {"audio": audio, "expression": expression}, ["cond"],
                       CONDITION)]
    with torch.no_grad():
        cond = model.encoder(audio, expression)
    for name in tiers:
        head = model.head_renderer(name)
        specs.append(StageSpec(graph_key(FIELD, name), head, {"cond": cond, "pose": pose}, ["rgb", "alpha", "feat"],
                               FIELD, name))
        with torch.no_grad():
            rgb, alpha, feat = head(cond, pose)
        specs.append(StageSpec(graph_key(REFINE, name), model.refiner(name),
                               {"coarse_rgb": rgb, "coarse_alpha": alpha, "coarse_feat": feat}, ["rgb", "alpha"],
                               REFINE, name))
    if mouth_module is not None and mouth_input is not None:
        specs.append(StageSpec(graph_key(MOUTH), mouth_module,
                               {"mouth_audio": torch.randn(batch, *mouth_input, generator=gen)}, ["mouth"], MOUTH))
    return specs


def validate_graphs(directory: Path, specs: list[StageSpec], batch: int = 1) -> dict[str, float]:
    """Max abs difference between onnxruntime (CPU) and PyTorch per graph, at a batch size not traced (2)."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime not installed: graphs checked by the ONNX checker only, not run")
        return {}
    import torch

    diffs = {}
    for spec in specs:
        feeds = {}
        for name, t in spec.inputs.items():
            reps = (batch + t.shape[0] - 1) // t.shape[0]
            feeds[name] = t.repeat(reps, *([1] * (t.dim() - 1)))[:batch].contiguous()
        with torch.no_grad():
            ref = spec.module(*feeds.values())
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        session = ort.InferenceSession(str(directory / graph_file(spec.key)), providers=["CPUExecutionProvider"])
        got = session.run(spec.outputs, {k: v.numpy() for k, v in feeds.items()})
        diffs[spec.key] = float(max(np.abs(g - r.numpy()).max() for g, r in zip(got, ref)))
        log.info("%s: max |onnxruntime - torch| = %.2e", spec.key, diffs[spec.key])
    return diffs


def export_avatar(avatar_dir: str | Path, cfg: ExportConfig = ExportConfig(), export_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[Path, ExportManifest]:
    """Export every stage graph of the avatar at `avatar_dir` into its export dir; returns (dir, manifest)."""
    import torch

    if cfg.plane_lookup not in PLANE_LOOKUPS:
        raise InputError(f"unknown plane lookup {cfg.plane_lookup!r}", f"use one of {', '.join(PLANE_LOOKUPS)}")
    avatar_dir = Path(avatar_dir)
    manifest = load_avatar_manifest(avatar_dir)  # refuses missing / old-format avatars with the fix
    from ideal.avatar.loading import load_avatar

    loaded = load_avatar(avatar_dir, device="cpu")
    model = loaded.model
    tiers = dict(loaded.tiers)
    if cfg.tiers:
        unknown = [t for t in cfg.tiers if t not in tiers]
        if unknown:
            raise InputError(f"{avatar_dir}: no tier {', '.join(unknown)}", f"the avatar has {', '.join(tiers)}")
        tiers = {k: tiers[k] for k in cfg.tiers}
    poses = _pose_track(avatar_dir)
    mouth_module, mouth_input = None, None
    if cfg.mouth:
        mouth_module, mouth_input = _mouth()
    directory = Path(export_dir) if export_dir is not None else export_dir_for(avatar_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INT8_TIMINGS).unlink(missing_ok=True)  # measured on the graphs being replaced
    (directory / EXPORT_MANIFEST).unlink(missing_ok=True)  # no manifest while graphs are half rewritten
    with torch.no_grad():  # scoped: a process-wide switch broke every later training in the same process
        specs = stage_specs(model, tiers, poses, mouth_module, mouth_input)
    out = ExportManifest(avatar_fingerprint=avatar_fingerprint(avatar_dir),
                         avatar_format_version=manifest.format_version,
                         opset=cfg.opset if cfg.exporter == "legacy" else max(cfg.opset, 18), exporter=cfg.exporter,
                         batch=cfg.batch, tiers={k: t.to_dict() for k, t in tiers.items()},
                         plane_lookup=cfg.plane_lookup)
    field = model.ray_renderer.field
    with torch.no_grad():
        field.set_lookup(cfg.plane_lookup)
        try:
            for spec in specs:
                if progress:
                    progress(spec.key)
                out.graphs[spec.key] = export_graph(spec, directory / graph_file(spec.key), cfg)
                log.info("exported %s", directory / graph_file(spec.key))
        finally:
            field.set_lookup("grid_sample")  # the reference the graphs are validated against
        int8_specs, int8_report = [], {}
        if cfg.int8:
            int8_specs, int8_report = export_int8_refiners(model, tiers, poses, avatar_dir, directory, cfg,
                                                           out, progress)
        if cfg.validate:
            out.validation = {"max_abs_diff": validate_graphs(directory, specs + int8_specs), "batch": 1,
                              "provider": "CPU"}
        if int8_report:
            out.validation["int8_vs_fp32"] = int8_report
    out.save(directory)
    return directory, out


def export_int8_refiners(model: Any, tiers: dict[str, Tier], poses: np.ndarray, avatar_dir: Path, directory: Path,
                         cfg: ExportConfig, out: ExportManifest, progress: Callable[[str], None] | None = None
                         ) -> tuple[list[StageSpec], dict[str, dict[str, float]]]:
    """`refine.<tier>.int8.onnx` for every tier with a learned refiner, calibrated on the avatar's own renders
    (export/quantize.py). Adds the graphs to `out`; returns their specs (validated against PyTorch like the
    others) and, per graph, how far the INT8 colours are from the FP32 graph's on renders not used to calibrate.
    Skipped, with a log line, when onnxruntime's quantization tools are not installed."""
    import torch

    from ideal.avatar.model.components.refiner import SplitRefiner
    from ideal.export.quantize import compare_with_float, int8_key, quantization_available, quantize_refine_graph

    learned = [t for t in tiers if t in model.refiners]
    if not learned:
        return [], {}
    if not quantization_available():
        log.warning("onnxruntime is not installed: no INT8 refine graphs (ONNX Runtime will run the FP32 ones)")
        return [], {}
    import onnxruntime as ort

    expressions = _expression_track(avatar_dir, len(poses))
    pick = np.linspace(0, len(poses) - 1, cfg.int8_frames).round().astype(int)
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(len(pick), model.cfg.audio_window, model.cfg.n_mels, generator=gen)
    with torch.no_grad():
        cond = model.encoder(audio, torch.from_numpy(expressions[pick]))
    specs, report = [], {}
    for tier in learned:
        key = int8_key(graph_key(REFINE, tier))
        if progress:
            progress(key)
        head = model.head_renderer(tier)
        with torch.no_grad():
            rendered = [head(cond[i:i + 4], torch.from_numpy(poses[pick[i:i + 4]])) for i in range(0, len(pick), 4)]
        frames = [{"coarse_rgb": r[0][j:j + 1].numpy(), "coarse_alpha": r[1][j:j + 1].numpy(),
                   "coarse_feat": r[2][j:j + 1].numpy()} for r in rendered for j in range(r[0].shape[0])]
        split = SplitRefiner(model.refiners[tier]).eval()
        spec = StageSpec(key, split, {k: torch.from_numpy(np.concatenate([frames[0][k], frames[1][k]]))
                                      for k in frames[0]}, ["rgb", "alpha"], REFINE, tier)
        float_path = directory / f"{key}.float.onnx"
        try:
            info = export_graph(spec, float_path, cfg)
            path = directory / graph_file(key)
            quantize_refine_graph(float_path, path, frames[0::2], split.bilinear.weight.detach().numpy())
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                        for p in (directory / graph_file(graph_key(REFINE, tier)), path)]
            report[key] = compare_with_float(*sessions, frames[1::2])
        finally:
            float_path.unlink(missing_ok=True)
        info.file, info.sha256 = path.name, sha256_file(path)
        out.graphs[key] = info
        specs.append(spec)
        log.info("%s: INT8 vs FP32 on %d renders: PSNR %.1f dB, max |diff| %.3f", key, report[key]["frames"],
                 report[key]["psnr_db"], report[key]["max_abs_diff"])
    return specs, report


def _pose_track(avatar_dir: Path) -> np.ndarray:
    """(N, 3, 4) poses the avatar was trained on (`pose_track.npz`), for realistic example inputs."""
    with np.load(avatar_dir / "pose_track.npz") as z:
        key = "pose" if "pose" in z.files else z.files[0]
        poses = np.asarray(z[key], dtype=np.float32)
    if poses.ndim != 3 or poses.shape[1:] != (3, 4):
        raise BackendError(f"{avatar_dir / 'pose_track.npz'}: expected poses (N, 3, 4), found {poses.shape}",
                           f"re-run `ideal train` for {avatar_dir}")
    return poses


def _expression_track(avatar_dir: Path, n: int) -> np.ndarray:
    """(n, E) tracked expressions beside the pose track (neutral when the track has none)."""
    with np.load(avatar_dir / "pose_track.npz") as z:
        if "expression" in z.files and len(z["expression"]) == n:
            return np.asarray(z["expression"], dtype=np.float32)
    return np.zeros((n, EXPRESSION_DIM), np.float32)


def _mouth() -> tuple[Any | None, tuple[int, int] | None]:
    try:
        from ideal.avatar.mouth.model import load_mouth_model

        mouth = load_mouth_model()
    except Exception as exc:  # the shipped model is optional for rendering; the graph is then left out
        log.warning("audio-to-mouth model not exported (%s)", exc)
        return None, None
    return mouth.module, (mouth.window.length, mouth.spec.input_dim)
