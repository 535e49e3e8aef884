"""Bilinear plane lookup, two implementations of one function.

`grid_sample_lookup` is PyTorch's `grid_sample` (fast in eager PyTorch; exports as ONNX GridSample).
`gather_lookup` computes the same interpolation (bilinear, border padding, align_corners=False) from row gathers
of each point's 4 neighbouring texels in a channel-last table and lerps. It exists for the exported graphs: ONNX
Runtime's CPU GridSample kernel took ~5x longer than the whole rest of the field graph here (51 of 85 ms on the
coarse tier); as gathers of 16-float rows and lerps it took 24 ms in the same run (`benchmarks/plane_lookup.py`).
Eager PyTorch is the other way round (grid_sample ~10 ms, gathers ~200 ms).

The field calls its lookup as `lookup(planes, x, y)` with the two coordinates as separate (N, P) tensors
(`grid_sample_xy_lookup` adapts grid_sample to that): from an (N, P, 2) grid ONNX Runtime picked the components
with strided Gathers costing ~2/3 of a row gather each (2.4 ms of a 22 ms coarse field graph).
"""

from __future__ import annotations

import torch
from torch import nn


def grid_sample_lookup(planes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """planes (N, C, R, R), grid (N, P, 2) in [-1, 1] as (x, y) -> features (N, C, P)."""
    out = nn.functional.grid_sample(planes, grid.unsqueeze(1), mode="bilinear", padding_mode="border",
                                    align_corners=False)
    return out.squeeze(2)


def grid_sample_xy_lookup(planes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """planes (N, C, R, R), x and y (N, P) in [-1, 1] -> features (N, C, P), by `grid_sample_lookup`."""
    # stacked on a new first axis and transposed: stacking on a new last axis took 2.5x as long in eager PyTorch
    return grid_sample_lookup(planes, torch.stack((x, y)).permute(1, 2, 0).contiguous())


def gather_lookup(planes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same function as `grid_sample_xy_lookup` written as row gathers and lerps (see the module doc)."""
    return gather_table_lookup(planes.permute(0, 2, 3, 1), x, y)


def gather_table_lookup(table: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`gather_lookup` of channel-last planes (N, R, R, C), the layout its row gathers read: the field blends
    its planes straight into this layout in the exported graphs (TriPlaneField.frame_table), where transposing
    the blended planes every frame cost ~0.5 ms of a 20 ms coarse field graph."""
    n, r, _, c = table.shape
    # border padding: clamp the continuous pixel coordinate, then take the cell whose corners surround it
    # (the last cell for a coordinate on the far border, with weight 1 on its far corner). Same arithmetic
    # as grid_sample's unnormalisation, so the two agree to rounding.
    px = (((x + 1.0) * r - 1.0) * 0.5).clamp(0.0, r - 1.0)  # (N, P)
    py = (((y + 1.0) * r - 1.0) * 0.5).clamp(0.0, r - 1.0)
    cx = px.floor().clamp(max=r - 2.0)
    cy = py.floor().clamp(max=r - 2.0)
    # (N, 1, P): the weights broadcast over channels along whole rows of P points; broadcast as (N*P, 1) over
    # channel-last rows, ONNX Runtime ran one 16-float span at a time, ~3x slower per multiply
    fx, fy = (px - cx).unsqueeze(1), (py - cy).unsqueeze(1)
    plane_offset = (torch.arange(n, device=table.device) * (r * r)).view(n, 1)
    top_left = (cy * r + cx).long() + plane_offset  # (N, P) rows of the table
    table = table.reshape(n * r * r, c)  # channel-last: one row = one texel's C features
    # gathering whole rows stays channel-last (gathering single floats channel-first was much slower in ORT);
    # turning each corner channel-first (~0.4 ms each) cost less than the slow broadcasts: the coarse field
    # graph ran ~1.5 ms faster than with channel-last lerps, and its output needs no final transpose
    corner = lambda k: table[top_left + k].transpose(1, 2)  # noqa: E731  (N, C, P)
    top = corner(0) + fx * (corner(1) - corner(0))
    bottom = corner(r) + fx * (corner(r + 1) - corner(r))
    return top + fy * (bottom - top)
