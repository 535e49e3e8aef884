"""Bilinear plane lookup, two implementations of one function.

`grid_sample_lookup` is PyTorch's `grid_sample` (fast in eager PyTorch; exports as ONNX GridSample).
`gather_lookup` computes the same interpolation (bilinear, border padding, align_corners=False) from one row
gather of each point's 2x2 neighbourhood in a channel-last table, a multiply and a sum over the 4 corners. It
exists for the exported graphs: ONNX Runtime's CPU GridSample kernel took ~5x longer than the whole rest of the
field graph here (51 of 85 ms on the coarse tier); as gathers of 16-float rows and lerps it took 24 ms in the same
run (`benchmarks/plane_lookup.py`). Eager PyTorch is the other way round (grid_sample ~10 ms, gathers ~200 ms).
"""

from __future__ import annotations

import torch
from torch import nn


def grid_sample_lookup(planes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """planes (N, C, R, R), grid (N, P, 2) in [-1, 1] as (x, y) -> features (N, C, P)."""
    out = nn.functional.grid_sample(planes, grid.unsqueeze(1), mode="bilinear", padding_mode="border",
                                    align_corners=False)
    return out.squeeze(2)


def gather_lookup(planes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The same function as `grid_sample_lookup` written as row gathers and lerps (see the module doc)."""
    n, c, r, _ = planes.shape
    p = grid.shape[1]
    # border padding: clamp the continuous pixel coordinate, then take the cell whose corners surround it
    # (the last cell for a coordinate on the far border, with weight 1 on its far corner)
    pix = (((grid + 1.0) * r - 1.0) * 0.5).clamp(0.0, r - 1.0)  # (N, P, 2) as (x, y)
    cell = pix.floor().clamp(max=r - 2.0)
    frac = pix - cell
    fx, fy = frac[..., 0].reshape(-1, 1), frac[..., 1].reshape(-1, 1)
    plane_offset = (torch.arange(n, device=planes.device) * (r * r)).view(n, 1)
    top_left = ((cell[..., 1] * r + cell[..., 0]).long() + plane_offset).reshape(-1)  # (N*P,) table rows
    table = planes.permute(0, 2, 3, 1).reshape(n * r * r, c)  # channel-last: one row = one texel's C features
    corner = lambda k: torch.index_select(table, 0, top_left + k)  # noqa: E731  (N*P, C)
    # two lerps along x, one along y: fewer full-size passes than weighting 4 corners (measured in ORT)
    top = corner(0) + fx * (corner(1) - corner(0))
    bottom = corner(r) + fx * (corner(r + 1) - corner(r))
    out = top + fy * (bottom - top)
    return out.view(n, p, c).transpose(1, 2)
