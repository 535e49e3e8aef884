"""INT8 refine graphs for ONNX Runtime on CPU: `refine.<tier>.int8.onnx` beside the FP32 `refine.<tier>.onnx`.

The refiner's convolutions are the densest arithmetic of a frame (64 -> 512 px: 36 -> 256 channels at 64 x 64),
and on a CPU with VNNI ONNX Runtime runs them in INT8 at ~2x the FP32 speed (docs/performance.md). Only the
learned convolutions are quantized: the graph is exported in the `SplitRefiner` form, whose bilinear image path
stays FP32, so the colours are not stepped by the hidden activations' scale; weights per output channel (int8),
activations per tensor (uint8) with ranges calibrated (min/max) on the avatar's own renders -- the pose track's
poses and tracked expressions -- so the ranges are those the live stream will see.

Static QDQ quantization (`onnxruntime.quantization.quantize_static`): the graph keeps float inputs and outputs, so
the backend feeds it exactly like the FP32 one. TensorRT never sees these graphs (it builds from the FP32 ones).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
    worst, total, sq, n = 0.0, 0.0, 0.0, 0
    for feeds in frames:
        a = session_float.run(None, feeds)
        b = session_int8.run(None, feeds)
        worst = max(worst, *(float(np.abs(x - y).max()) for x, y in zip(a, b)))
        d = (a[0] - b[0]).astype(np.float64)
        total += float(np.abs(d).sum())
        sq += float((d * d).sum())
        n += d.size
    mse = sq / max(n, 1)
    return {"max_abs_diff": worst, "mean_abs_diff": total / max(n, 1),
            "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"), "frames": len(frames)}
