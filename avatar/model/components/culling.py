"""Ray culling: render only the rays that can meet the head, at a fixed ray budget per tier.

Of a tier's crop grid, 59-79% of the rays cross the canonical head box on the built-in avatar, but only 30-45%
end up with any opacity: the box is drawn generously around hair, ears and neck, and much of it is empty for
every expression. An *occupancy grid* (a voxel grid of the box, 1 where the field has density for some
expression) is measured once per avatar (`estimate_occupancy`, run by `ideal train` and `ideal occupancy`).
Per frame, the rays whose pixel lies in the projection of an occupied cell are packed into a fixed-size list
(`pack_rays`), only those are rendered, and they are scattered back into the tier's image (`unpack_rays`); the
others come out exactly transparent, which they were to within the occupancy threshold.

Static shapes (the exported graphs need them): each tier renders exactly `budget` rays, the most masked rays
any pose of the avatar's pose track needs plus a margin (`ray_budgets`). A pose that needs more (never with the
avatar's own pose track, which idle motion and dubbing use) drops the last masked rays in raster order, the
bottom of the neck. The packing is a cumulative sum and a scatter (no TopK, no boolean indexing), so it exports
to ONNX and to TensorRT, whose TopK is limited to 3840 elements.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

BUDGET_MARGIN = 1.05


class RayCulling(nn.Module):
    """The avatar's occupancy grid (D, D, D) over the canonical head box, indexed [x, y, z], and the per-frame
    ray mask it gives.

    The camera is orthographic (avatar.model.components.rays), so every ray of a frame is parallel and a ray
    meets an occupied cell exactly when the ray's pixel lies inside the cell's projection: the mask is the
    occupied cells' centres projected with the frame's pose, marked on the tier's ray grid and dilated by the
    projected cell radius. Only the surface cells are projected (a solid's projection is its surface's).
    Constant work per frame (one small matmul, one scatter, one max-pool)."""

    def __init__(self, grid: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor) -> None:
        super().__init__()
        if grid.dim() != 3 or len(set(grid.shape)) != 1:
            raise ValueError(f"occupancy grid must be (D, D, D), got {tuple(grid.shape)}")
        self.resolution = d = int(grid.shape[0])
        box_min, box_max = box_min.detach().float(), box_max.detach().float()
        occupied = grid > 0.5
        # a solid's projection is its surface's: cells whose six neighbours are all occupied add nothing
        padded = nn.functional.pad(occupied.float()[None, None], (1, 1, 1, 1, 1, 1))[0, 0] > 0.5
        interior = occupied.clone()
        for axis in range(3):
            for shift in (0, 2):
                interior &= padded.narrow(axis, shift, d).narrow((axis + 1) % 3, 1, d).narrow((axis + 2) % 3, 1, d)
        cells = torch.nonzero(occupied & ~interior).float()  # (N, 3) [x, y, z] indices
        centres = box_min + (cells + 0.5) / d * (box_max - box_min)
        self.register_buffer("centres", centres, persistent=False)
        # the farthest a cell's points are from its centre (canonical length): half the cell diagonal
        self.cell_radius = float(((box_max - box_min) / d).norm()) / 2.0

    def footprint(self, pose: torch.Tensor, crop: tuple[float, float, float], rays: int) -> int:
        """Half-width in rays of the square that holds a cell's projection around its centre's ray, for the
        largest head scale in `pose` (N, 3, 4)."""
        scale = float(((pose[:, :, :3] ** 2).sum(dim=(1, 2)) / 3.0).sqrt().max())
        return int(math.ceil(self.cell_radius * scale / (crop[2] / rays)))

    def ray_mask(self, pose: torch.Tensor, crop: tuple[float, float, float], rays: int,
                 footprint: int) -> torch.Tensor:
        """pose (B, 3, 4) -> (B, rays*rays) 1.0 on the rays that may meet an occupied cell (row-major, as
        avatar.model.components.rays.crop_pixel_grid), else 0."""
        b = pose.shape[0]
        x0, y0, size = crop
        step = size / rays
        # u and v as two (B, N) rows, translated by per-frame scalars: as (B, N, 2) the exported graph broadcast
        # the translation over the size-2 axis two floats at a time (0.2 ms, ten times the other per-cell ops)
        uv = torch.einsum("bij,nj->bin", pose[:, :2, :3], self.centres)  # (B, 2, N)
        col = ((uv[:, 0] + pose[:, 0, 3:] - x0) / step).floor()
        row = ((uv[:, 1] + pose[:, 1, 3:] - y0) / step).floor()
        # centres off the grid are kept on its border: their footprint may still reach in
        inside = (col >= -footprint) & (col < rays + footprint) & (row >= -footprint) & (row < rays + footprint)
        col, row = col.clamp(0, rays - 1), row.clamp(0, rays - 1)
        index = torch.where(inside, (row * rays + col).long(), torch.full_like(col, rays * rays).long())
        marks = torch.zeros(b, rays * rays + 1, dtype=pose.dtype, device=pose.device)
        marks = marks.scatter(1, index, torch.ones_like(col))[:, :rays * rays]
        k = 2 * footprint + 1
        mask = nn.functional.max_pool2d(marks.view(b, 1, rays, rays), k, stride=1, padding=footprint)
        return mask.view(b, rays * rays)


def pack_rays(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """scores (B, R) -> indices (B, budget) of the rays to render: the occupied rays (score > 0) in raster
    order, the unused slots filled with ray 0 (rendered once more and scattered back onto itself, which is
    harmless: the same pixel gives the same value), the occupied rays past the budget dropped."""
    b, r = scores.shape
    occupied = (scores > 0).long()
    slot = torch.cumsum(occupied, dim=1) - 1
    # unoccupied rays and the overflow go to a spare slot that is cut off
    slot = torch.where(occupied > 0, slot.clamp(max=budget), torch.full_like(slot, budget))
    rays = torch.arange(r, device=scores.device).unsqueeze(0).expand(b, r)
    packed = torch.zeros(b, budget + 1, dtype=torch.long, device=scores.device).scatter(1, slot, rays)
    return packed[:, :budget]


def unpack_rays(values: torch.Tensor, index: torch.Tensor, n_rays: int) -> torch.Tensor:
    """values (B, V, K) channel-first of the packed rays, index (B, K) -> (B, V, n_rays), zero where no ray was
    rendered."""
    b, v, _ = values.shape
    out = torch.zeros(b, v, n_rays, dtype=values.dtype, device=values.device)
    return out.scatter(2, index.unsqueeze(1).expand(-1, v, -1), values)


@torch.no_grad()
def estimate_occupancy(ray_renderer: nn.Module, cond: torch.Tensor, opacity: float, resolution: int = 64,
                       supersample: int = 1, min_step: float | None = None,
                       show_progress: bool = False) -> torch.Tensor:
    """Occupancy grid (D, D, D) of the field over the conditions `cond` (N, T, C): a cell is occupied where
    any of its supersample^3 points has, for any condition, a density whose opacity over `min_step` (canonical
    length; default: the box depth over 6 samples, the fastest tier) exceeds `opacity`."""
    field, ga = ray_renderer.field, ray_renderer.ga
    box_min, box_max = field.box_min, field.box_max
    if min_step is None:
        min_step = float((box_max - box_min).max()) / 6.0
    threshold = -math.log(1.0 - opacity) / min_step  # density giving that opacity over min_step
    n = resolution * supersample
    axis = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    unit = torch.stack([gx, gy, gz], dim=-1).reshape(1, -1, 3)
    points = box_min + unit * (box_max - box_min)  # (1, n^3, 3) in [x, y, z] order
    peak = torch.zeros(n ** 3)
    items = range(cond.shape[0])
    if show_progress:
        from ideal.avatar.progress import progress_bar

        items = progress_bar(items, desc="occupancy", unit="condition", leave=False)
    for i in items:
        c = cond[i:i + 1]
        coeffs = ray_renderer.blend(c.flatten(1)) if ray_renderer.blend is not None else None
        spatial, inside = field(points, coeffs)
        density, _, _ = ga(spatial, c)
        peak = torch.maximum(peak, (density * inside)[0])
    fine = (peak > threshold).float().view(1, 1, n, n, n)
    return nn.functional.max_pool3d(fine, supersample)[0, 0]  # any occupied point occupies its cell


def occupancy_conditions(encoder: nn.Module, expressions: np.ndarray, audio_windows: np.ndarray | None,
                         n_evenly: int = 48, seed: int = 0) -> torch.Tensor:
    """Conditions (N, T, C) covering an avatar's range: evenly spaced frames of its expression track plus the
    frames at the extremes of every expression field (widest mouth, closed eyes, raised brows...), each with its
    own audio window when given, else a random one drawn from the audio encoder's input statistics (the field
    reads the mouth from the expression; the audio only modulates it)."""
    n = len(expressions)
    picks = set(np.linspace(0, n - 1, min(n, n_evenly)).round().astype(int).tolist())
    picks |= set(np.argmax(expressions, axis=0).tolist()) | set(np.argmin(expressions, axis=0).tolist())
    idx = np.array(sorted(picks))
    expr = torch.from_numpy(expressions[idx]).float()
    audio_enc = encoder.audio
    if audio_windows is not None:
        audio = torch.from_numpy(audio_windows[idx]).float()
    else:
        g = torch.Generator().manual_seed(seed)
        shape = (len(idx), audio_enc.n_tokens * 4, audio_enc.input_mean.shape[0])
        audio = audio_enc.input_mean + audio_enc.input_std * torch.randn(shape, generator=g)
    with torch.no_grad():
        return encoder(audio, expr)


@torch.no_grad()
def ray_budgets(culling: RayCulling, crop: tuple[float, float, float], tier_rays: dict[str, int],
                poses: torch.Tensor, chunk: int = 100) -> dict[str, dict[str, int]]:
    """Per tier, for every pose in `poses` (N, 3, 4): the footprint (half-width in rays of a cell's projection)
    and the ray budget, the most masked rays of any pose times BUDGET_MARGIN, rounded up to a multiple of 64
    (never more than the tier's grid)."""
    out = {}
    for name, rays in tier_rays.items():
        footprint = culling.footprint(poses, crop, rays)
        most = 0
        for start in range(0, len(poses), chunk):
            mask = culling.ray_mask(poses[start:start + chunk], crop, rays, footprint)
            most = max(most, int(mask.sum(dim=1).max()))
        out[name] = {"rays": int(min(rays * rays, math.ceil(most * BUDGET_MARGIN / 64) * 64)), "footprint": footprint}
    return out
