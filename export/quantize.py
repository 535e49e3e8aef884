"""INT8 refine graphs for ONNX Runtime on CPU: `refine.<tier>.int8.onnx` beside the FP32 `refine.<tier>.onnx`.

The refiner's convolutions are the densest arithmetic of a frame (64 -> 512 px: 36 -> 256 channels at 64 x 64).
How much INT8 saves depends on the CPU (VNNI or not), so the backend decides per machine by measurement
(`time_graph_pair`, recorded in `int8_timings.json` beside the graphs). Only the
learned convolutions are quantized: the graph is exported in the `SplitRefiner` form, whose bilinear image path
stays FP32, so the colours are not stepped by the hidden activations' scale; weights per output channel (int8),
activations per tensor (uint8) with ranges calibrated (min/max) on the avatar's own renders -- the pose track's
poses and tracked expressions -- so the ranges are those the live stream will see.

Static QDQ quantization (`onnxruntime.quantization.quantize_static`): the graph keeps float inputs and outputs, so
the backend feeds it exactly like the FP32 one. TensorRT never sees these graphs (it builds from the FP32 ones).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

INT8 = "int8"


def int8_key(key: str) -> str:
    """`refine.coarse` -> `refine.coarse.int8`."""
    return f"{key}.{INT8}"


def quantization_available() -> bool:
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_refine_graph(float_graph: Path, out: Path, calibration: list[dict[str, np.ndarray]],
                          image_kernel: np.ndarray) -> None:
    """Quantize every convolution of `float_graph` (a `SplitRefiner` export) except the bilinear one, whose
    weight equals `image_kernel`; write the QDQ graph to `out` (atomically)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(float_graph))
    weights = {init.name: init for init in model.graph.initializer}
    learned = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = weights.get(node.input[1])
        value = numpy_helper.to_array(w) if w is not None else None
        if value is not None and value.shape == image_kernel.shape and np.allclose(value, image_kernel, atol=1e-7):
            continue
        learned.append(node.name)
    if not learned:
        raise ValueError(f"{float_graph}: no learned convolution found to quantize")

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    tmp = out.with_suffix(".onnx.partial")
    quantize_static(str(float_graph), str(tmp), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_quantize=learned)
    tmp.replace(out)
    log.info("quantized %d convolutions of %s -> %s", len(learned), float_graph.name, out.name)


def compare_with_float(session_float: Any, session_int8: Any, frames: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """INT8 vs FP32 graph on the given frames: largest abs difference, mean abs difference (RGB, in 0..1) and the
    PSNR of the INT8 colours against the FP32 ones, over all frames."""
    from ideal.avatar.evaluation.image_metrics import psnr

    worst, colours_float, colours_int8 = 0.0, [], []
    for feeds in frames:
        a = session_float.run(None, feeds)
        b = session_int8.run(None, feeds)
        worst = max(worst, *(float(np.abs(x - y).max()) for x, y in zip(a, b)))
        colours_float.append(a[0])
        colours_int8.append(b[0])
    ref, got = np.concatenate(colours_float), np.concatenate(colours_int8)
    return {"max_abs_diff": worst, "mean_abs_diff": float(np.abs(ref.astype(np.float64) - got).mean()),
            "psnr_db": psnr(got, ref), "frames": len(frames)}


# --- whether INT8 is worth it on this machine ------------------------------------------------------------
# INT8 is a trade: its colours are 44-48 dB from FP32's (invisible, but not nothing) for speed that depends on
# the CPU (about 1.6x on AVX-512 VNNI, about 1.1x on AVX2 alone). So the backend uses an INT8 graph only where it
# measured it faster by this factor, on the CPU it runs on.
Int8Policy = Literal["auto", "always", "never"]
MIN_INT8_SPEEDUP = 1.15
INT8_TIMINGS = "int8_timings.json"  # beside the graphs: {cpu signature: {graph key: timing}}
_ISA_FLAGS = ("avx512_vnni", "avx_vnni", "avx512f", "avx512bw", "avx2", "fma", "amx_int8")


def int8_policy(value: bool | str) -> Int8Policy:
    """`True` (the default everywhere: INT8 where measured faster) -> "auto", `False` -> "never"."""
    if value is True:
        return "auto"
    if value is False:
        return "never"
    if value not in ("auto", "always", "never"):
        raise ValueError(f"INT8 policy {value!r}: expected auto, always or never")
    return value  # type: ignore[return-value]  # narrowed by the check above


def cpu_signature(threads: int | None) -> str:
    """What decides INT8's speed here: the CPU model, its vector and dot-product instructions, the onnxruntime
    version and the thread count. A copied export measures again on another machine."""
    import onnxruntime as ort

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:  # not Linux: the model name from platform is what we have
        pass
    isa = "+".join(f for f in _ISA_FLAGS if f in flags) or "unknown-isa"
    return f"{model} | {isa} | onnxruntime {ort.__version__} | threads {threads or 'all'}"


@dataclass(frozen=True)
class Int8Timing:
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / max(self.int8_ms, 1e-9)

    @property
    def worth_it(self) -> bool:
        return self.speedup >= MIN_INT8_SPEEDUP


def time_graph_pair(session_float: Any, session_int8: Any, runs: int = 9) -> Int8Timing:
    """Fastest wall time of one batch-1 run of each graph on the same random inputs, the two interleaved. The
    fastest run is the kernels' own speed; medians moved with whatever else the machine was doing (a server
    measures while it starts up, right after exporting)."""
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in session_float.get_inputs()}
    times: dict[int, list[float]] = {0: [], 1: []}
    for k in range(runs + 2):
        for which, session in enumerate((session_float, session_int8)):
            start = time.perf_counter()
            session.run(None, feeds)
            if k >= 2:  # the first runs allocate and warm caches
                times[which].append(time.perf_counter() - start)
    return Int8Timing(fp32_ms=1000 * min(times[0]), int8_ms=1000 * min(times[1]))


def load_int8_timings(export_dir: Path, signature: str) -> dict[str, Int8Timing]:
    try:
        data = json.loads((export_dir / INT8_TIMINGS).read_text()).get(signature, {})
        return {k: Int8Timing(float(v["fp32_ms"]), float(v["int8_ms"])) for k, v in data.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # none yet, or unreadable: measure again


def save_int8_timings(export_dir: Path, signature: str, timings: dict[str, Int8Timing]) -> None:
    """Record this CPU's measurements beside the others' (best effort: a read-only export dir just measures again
    next time)."""
    from ideal.avatar.manifest import write_manifest

    path = export_dir / INT8_TIMINGS
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data.setdefault(signature, {}).update({key: {"fp32_ms": round(t.fp32_ms, 3), "int8_ms": round(t.int8_ms, 3),
                                                 "speedup": round(t.speedup, 3)} for key, t in timings.items()})
    try:
        write_manifest(path, data)  # atomic: a reader never sees half a file
    except OSError as exc:
        log.debug("could not record the INT8 timings in %s: %s", path, exc)
