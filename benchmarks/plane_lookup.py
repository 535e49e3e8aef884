"""Tri-plane lookup cost per implementation and runtime (why the exported field graphs use gathers).

    python benchmarks/plane_lookup.py [--points 49152] [--repeats 10]

Times avatar.model.fields.lookup.{grid_sample_xy_lookup, gather_lookup} (the field's `lookup(planes, x, y)`) for
3 planes x 16 channels x 128^2 in eager PyTorch and exported to ONNX Runtime (1 thread each, process CPU time), and
checks both against grid_sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ideal.avatar.model.fields.lookup import gather_lookup, grid_sample_lookup, grid_sample_xy_lookup


class _Lookup(torch.nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, planes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(planes, x, y)


def cpu_ms(fn, repeats: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return 1000.0 * (time.process_time() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=49152, help="points per plane (coarse tier: 64*64*12)")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(3, 16, 128, 128, generator=gen)
    grid = torch.rand(3, args.points, 2, generator=gen) * 2.2 - 1.1  # some points beyond the border
    ref = grid_sample_lookup(planes, grid)
    x, y = grid[..., 0].contiguous(), grid[..., 1].contiguous()
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    feed = {"planes": planes.numpy(), "x": x.numpy(), "y": y.numpy()}
    print(f"{'lookup':<24}{'max |diff|':>12}{'torch ms':>10}{'ORT ms':>10}")
    for fn in (grid_sample_xy_lookup, gather_lookup):
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = str(Path(tmp) / "lookup.onnx")
            torch.onnx.export(_Lookup(fn), (planes, x, y), path, dynamo=False, opset_version=17,
                              input_names=["planes", "x", "y"])
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            diff = float(np.abs(sess.run(None, feed)[0] - ref.numpy()).max())
            ort_ms = cpu_ms(lambda sess=sess: sess.run(None, feed), args.repeats)
        with torch.inference_mode():
            torch_ms = cpu_ms(lambda fn=fn: fn(planes, x, y), args.repeats)
        print(f"{fn.__name__:<24}{diff:>12.1e}{torch_ms:>10.1f}{ort_ms:>10.1f}")


if __name__ == "__main__":
    main()
