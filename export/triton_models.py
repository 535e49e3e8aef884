"""The one description of an avatar's models on a Triton Inference Server: names, inputs, outputs, batching and
the parameters that tie them to one avatar and one export.

Both the exported model repository (`export.triton_export`, `ideal export --target triton`) and the local
development server (`export.triton_server`, `ideal triton`) are written from `model_specs`, and the client
(`export.triton_backend`) checks what a server answers against it, so the three cannot drift apart.

Models of an avatar whose namespace is NS (the avatar dir's name; `default` for the built-in avatar):

    NS.condition        audio (B,W,M), expression (B,E)          -> cond (B,T,C)                 ONNX graph
    NS.field.<tier>     cond, pose (B,3,4)                        -> rgb, alpha, feat (r x r)     ONNX graph / plan
    NS.refine.<tier>    coarse_rgb, coarse_alpha, coarse_feat     -> rgb (B,3,S,S), alpha (B,1,S,S)
    NS.pack.<tier>      rgb, alpha                                -> rgba (B,S,S,4) uint8          ONNX graph
    NS.render.<tier>    audio, expression, pose                   -> rgba (B,S,S,4) uint8          ensemble of the 4

The wire format of a crop is RGBA in 8 bits (`pack_rgba`): 1 MiB per 512 px frame instead of the stage graphs'
4 MiB of float32, within half a level of 255 of the float crop (the exported backends' parity tolerance is 2/255).
A client sends one request per frame (or per batch its render queue formed) to `NS.render.<tier>`; inside
Triton the ensemble passes the intermediate tensors between the stage models without leaving the server, and
each stage model batches requests from every session and node (dynamic batching). Every model's config carries
the avatar's fingerprint and the repository format version as parameters: a client refuses models of another
avatar or export version with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ideal.avatar.backend import Tier
from ideal.avatar.errors import BackendError
from ideal.export.artifacts import CONDITION, FIELD, REFINE, ExportManifest, graph_key

TRITON_FORMAT_VERSION = 1
TRITON_MANIFEST = "ideal-triton.json"
RENDER = "render"
PACK = "pack"
# config parameters (strings, as Triton's model config has them)
P_FINGERPRINT = "ideal_avatar_fingerprint"
P_FORMAT = "ideal_triton_format"
P_TIER = "ideal_tier"
P_AVATAR = "ideal_avatar"
# the batching every model gets: a small queue delay lets requests of several sessions meet in one batch for at
# most this long (2 ms of a 40 ms frame)
DEFAULT_QUEUE_DELAY_US = 2000
DEFAULT_MAX_BATCH = 16


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch dimension
    dtype: str = "FP32"  # Triton's wire name; "TYPE_" + dtype in config.pbtxt


@dataclass
class ModelSpec:
    """One Triton model: a stage graph (`graph` = its key in the export manifest) or the per-tier ensemble
    (`steps`: (model name, {model input: ensemble tensor}, {model output: ensemble tensor}))."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    parameters: dict[str, str]
    graph: str | None = None
    builtin: str | None = None  # a model not exported from the avatar: "pack" (float crop -> RGBA8)
    tier: str | None = None
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.steps)


def namespace_for(avatar_dir: Any) -> str:
    """The model-name prefix of an avatar: its dir's name, `default` for the built-in avatar."""
    from pathlib import Path

    from ideal.avatar.manifest import DEFAULT_AVATAR_DIR

    path = Path(avatar_dir).resolve()
    name = "default" if path == Path(DEFAULT_AVATAR_DIR).resolve() else path.name
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "avatar"


def model_name(namespace: str, stage: str, tier: str | None = None) -> str:
    return f"{namespace}.{graph_key(stage, tier)}"


def render_model(namespace: str, tier: str) -> str:
    return model_name(namespace, RENDER, tier)


def _tensors(shapes: dict[str, list[int | str]]) -> list[TensorSpec]:
    out = []
    for name, shape in shapes.items():
        if not shape or shape[0] != "B" or any(not isinstance(d, int) for d in shape[1:]):
            raise BackendError(f"graph tensor {name} has shape {shape}; a Triton model needs (B, fixed...)",
                               "re-export the avatar (`ideal export AVATAR --target onnx`)")
        out.append(TensorSpec(name, tuple(int(d) for d in shape[1:])))
    return out


def model_specs(manifest: ExportManifest, namespace: str, avatar: str, tiers: list[str] | None = None,
                max_batch_size: int | None = None) -> list[ModelSpec]:
    """Every model of the avatar, stage models first, then one ensemble per tier."""
    tiers = list(tiers or manifest.tiers)
    unknown = [t for t in tiers if t not in manifest.tiers]
    if unknown:
        raise BackendError(f"tiers {', '.join(unknown)} were not exported (have {', '.join(manifest.tiers)})",
                           "pick exported tiers or re-export with them")
    batch = min(max_batch_size or DEFAULT_MAX_BATCH, int(manifest.batch.get("max", DEFAULT_MAX_BATCH)))
    base = {P_FINGERPRINT: manifest.avatar_fingerprint, P_FORMAT: str(TRITON_FORMAT_VERSION), P_AVATAR: avatar}
    specs: list[ModelSpec] = []
    keys = [(CONDITION, None)] + [(FIELD, t) for t in tiers] + [(REFINE, t) for t in tiers]
    for stage, tier in keys:
        info = manifest.graphs[graph_key(stage, tier)]
        specs.append(ModelSpec(model_name(namespace, stage, tier), _tensors(info.inputs), _tensors(info.outputs),
                               batch, dict(base), graph=graph_key(stage, tier), tier=tier))
    by_name = {s.name: s for s in specs}
    for tier in tiers:
        cond = by_name[model_name(namespace, CONDITION)]
        fld = by_name[model_name(namespace, FIELD, tier)]
        ref = by_name[model_name(namespace, REFINE, tier)]
        pose = next(t for t in fld.inputs if t.name == "pose")
        size = int(manifest.tiers[tier]["output"])
        pack = ModelSpec(model_name(namespace, PACK, tier), [TensorSpec("rgb", (3, size, size)),
                                                             TensorSpec("alpha", (1, size, size))],
                         [TensorSpec("rgba", (size, size, 4), "UINT8")], batch, dict(base), tier=tier, builtin=PACK)
        steps = [
            (cond.name, {t.name: t.name for t in cond.inputs}, {"cond": "cond"}),
            (fld.name, {"cond": "cond", "pose": "pose"}, {o.name: f"coarse_{o.name}" for o in fld.outputs}),
            (ref.name, {i.name: i.name for i in ref.inputs}, {o.name: f"crop_{o.name}" for o in ref.outputs}),
            (pack.name, {"rgb": "crop_rgb", "alpha": "crop_alpha"}, {"rgba": "rgba"}),
        ]
        params = {**base, P_TIER: json.dumps(Tier.from_dict(manifest.tiers[tier]).to_dict(), sort_keys=True)}
        specs.append(pack)
        specs.append(ModelSpec(render_model(namespace, tier), [*cond.inputs, pose], list(pack.outputs), batch,
                               params, tier=tier, steps=steps))
    return specs


# --- the wire format of a crop ------------------------------------------------------------------------------
def pack_rgba(rgb: Any, alpha: Any) -> Any:
    """rgb (B,3,S,S), alpha (B,1,S,S) float in [0, 1] -> (B,S,S,4) uint8: each value times 255, rounded half to
    even, clipped to 0..255 (what `pack_graph` computes in the repository). OpenCV per plane: 0.15 ms for a 512 px
    crop where the same in numpy took 4.5 ms on the server's render path."""
    import cv2
    import numpy as np

    b, _, s, _ = rgb.shape
    out = np.empty((b, s, s, 4), np.uint8)
    for i in range(b):
        planes = [*(rgb[i, c] for c in range(3)), alpha[i, 0]]
        # negatives to 0 first: convertScaleAbs rounds |x * 255| and saturates at 255
        out[i] = cv2.merge([cv2.convertScaleAbs(cv2.max(np.ascontiguousarray(p, np.float32), 0.0), alpha=255.0)
                            for p in planes])
    return out


def unpack_rgba(rgba: Any) -> tuple[Any, Any]:
    """(B,S,S,4) uint8 -> rgb (B,S,S,3), alpha (B,S,S,1) float32 in [0, 1] (views of one float32 array)."""
    import numpy as np

    crop = rgba.astype(np.float32)
    crop *= np.float32(1.0 / 255.0)
    return crop[..., :3], crop[..., 3:]


def pack_graph(size: int, opset: int = 17) -> Any:
    """The ONNX graph of `pack_rgba` for an S x S crop (the repository's NS.pack.<tier> models)."""
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, value: float) -> Any:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))

    nodes = [
        helper.make_node("Concat", ["rgb", "alpha"], ["both"], axis=1),
        helper.make_node("Transpose", ["both"], ["hwc"], perm=[0, 2, 3, 1]),
        const("scale", 255.0), const("low", 0.0), const("high", 255.0),
        helper.make_node("Mul", ["hwc", "scale"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),  # half to even, as OpenCV's cvRound
        helper.make_node("Clip", ["rounded", "low", "high"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["rgba"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "pack_rgba",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["B", 3, size, size]),
         helper.make_tensor_value_info("alpha", TensorProto.FLOAT, ["B", 1, size, size])],
        [helper.make_tensor_value_info("rgba", TensorProto.UINT8, ["B", size, size, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ideal-nerf")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# --- config.pbtxt ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    """How a repository runs its stage models (`ideal export --target triton`'s options derive from the fields
    with a help text)."""

    device: Literal["cpu", "gpu"] = field(default="cpu", metadata={
        "help": "cpu: ONNX Runtime backend on CPU instances; gpu: TensorRT plans built with --target tensorrt where "
                "present, else ONNX Runtime with its TensorRT accelerator"})
    instances: int = field(default=1, metadata={"help": "model instances per stage model"})
    queue_delay_us: int = field(default=DEFAULT_QUEUE_DELAY_US, metadata={
        "help": "dynamic batching: longest wait for a fuller batch, microseconds"})
    fp16: bool = False  # the TensorRT plans and accelerator in FP16 (export's --fp16)


def _tensor_block(kind: str, tensors: list[TensorSpec]) -> str:
    rows = ",\n".join(f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ {", ".join(map(str, t.dims))} ] }}'
                      for t in tensors)
    return f"{kind} [\n{rows}\n]\n"


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value {{ string_value: {json.dumps(v)} }} }}\n'
                   for k, v in sorted(params.items()))


def config_pbtxt(spec: ModelSpec, deployment: Deployment | None = None,
                 plans: dict[str, str] | None = None) -> str:
    """The model's config.pbtxt. `plans`: compute capability ("8.9") -> TensorRT plan file, for a stage model
    of a GPU repository (none: the ONNX graph)."""
    deployment = deployment or Deployment()
    text = f'name: "{spec.name}"\n'
    if spec.is_ensemble:
        text += 'platform: "ensemble"\n'
    elif plans:
        text += 'platform: "tensorrt_plan"\n'
    else:
        text += 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
    text += f"max_batch_size: {spec.max_batch_size}\n"
    text += _tensor_block("input", spec.inputs) + _tensor_block("output", spec.outputs)
    if spec.is_ensemble:
        steps = []
        for name, inputs, outputs in spec.steps:
            maps = "".join(f'      input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in inputs.items())
            maps += "".join(f'      output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outputs.items())
            steps.append(f'    {{\n      model_name: "{name}"\n      model_version: -1\n{maps}    }}')
        text += "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    else:
        kind = "KIND_GPU" if deployment.device == "gpu" else "KIND_CPU"
        text += f"instance_group [ {{ count: {deployment.instances} kind: {kind} }} ]\n"
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {deployment.queue_delay_us} }}\n"
        if plans:
            text += "".join(f'cc_model_filenames {{ key: "{cc}" value: "{f}" }}\n' for cc, f in sorted(plans.items()))
        elif deployment.device == "gpu" and spec.builtin is None:
            precision = "FP16" if deployment.fp16 else "FP32"
            text += ("optimization { execution_accelerators { gpu_execution_accelerator: [ { name: \"tensorrt\" "
                     f'parameters {{ key: "precision_mode" value: "{precision}" }} }} ] }} }}\n')
    return text + _parameters(spec.parameters)


def parse_pbtxt_summary(text: str) -> dict[str, Any]:
    """What a test or the repository check needs back from a config.pbtxt written by `config_pbtxt`: name,
    max batch, tensors (name -> dims) and parameters. Not a general protobuf text parser."""
    name = re.search(r'^name: "([^"]+)"', text, re.M)
    batch = re.search(r"^max_batch_size: (\d+)", text, re.M)

    def block(kind: str) -> dict[str, tuple[int, ...]]:
        m = re.search(rf"^{kind} \[\n(.*?)\n\]", text, re.M | re.S)
        rows = re.findall(r'name: "([^"]+)" data_type: TYPE_\w+ dims: \[ ([\d, ]+) \]', m.group(1)) if m else []
        return {n: tuple(int(d) for d in dims.split(",")) for n, dims in rows}

    params = dict(re.findall(r'parameters \{ key: "([^"]+)" value \{ string_value: ("(?:[^"\\]|\\.)*") \} \}', text))
    return {"name": name.group(1) if name else None, "max_batch_size": int(batch.group(1)) if batch else None,
            "inputs": block("input"), "outputs": block("output"),
            "parameters": {k: json.loads(v) for k, v in params.items()},
            "ensemble_steps": re.findall(r'model_name: "([^"]+)"', text)}


# --- what a client checks ----------------------------------------------------------------------------------
def check_served_model(url: str, name: str, parameters: dict[str, str], fingerprint: str, avatar_dir: Any) -> None:
    """Refuse a served model that belongs to another avatar or another repository format, with the reason."""
    fmt = parameters.get(P_FORMAT)
    if fmt is None or parameters.get(P_FINGERPRINT) is None:
        raise BackendError(f"{url}: model {name} was not exported by ideal-nerf (its config has no "
                           f"{P_FORMAT}/{P_FINGERPRINT} parameters)",
                           f"load the repository of `ideal export {avatar_dir} --target triton`")
    if fmt != str(TRITON_FORMAT_VERSION):
        raise BackendError(f"{url}: model {name} is from a model repository of format version {fmt}; this "
                           f"ideal-nerf reads version {TRITON_FORMAT_VERSION}",
                           f"re-export it (`ideal export {avatar_dir} --target triton -o REPO`) and reload Triton")
    if parameters[P_FINGERPRINT] != fingerprint:
        served = parameters.get(P_AVATAR, "?")
        raise BackendError(f"{url}: model {name} was exported from another avatar or another version of it "
                           f"(served: {served}, fingerprint {parameters[P_FINGERPRINT][:12]}; {avatar_dir}: "
                           f"{fingerprint[:12]})",
                           f"export this avatar's repository (`ideal export {avatar_dir} --target triton -o REPO`) "
                           "and load it into Triton, or serve the avatar that Triton has")
