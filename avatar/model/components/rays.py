"""Rays of the fixed crop under a weak-perspective camera, moved into canonical head space.

The camera is orthographic along +z in full-frame pixel space: pixel (u, v) gives the ray p(z) = (u, v, z).
The head pose P = [A | t] with A = s R maps canonical points to pixels (p = A q + t), so a canonical point is
q = A^-1 (p - t) with A^-1 = A^T / s^2 (no matrix inverse op: export-friendly). Every ray of the crop is then
o + z d in canonical space with o = A^-1 (u - t_x, v - t_y, -t_z) and d = A^-1 e_z (the same for all rays).
"""

from __future__ import annotations

import torch


def crop_pixel_grid(crop: tuple[float, float, float], rays: int) -> torch.Tensor:
    """Centres of a rays x rays grid over the square crop (x0, y0, size) in full-frame pixels: (rays*rays, 2),
    row-major (v outer, u inner), so reshaping to (rays, rays) gives an image."""
    x0, y0, size = crop
    step = size / rays
    c = (torch.arange(rays, dtype=torch.float32) + 0.5) * step
    v, u = torch.meshgrid(c + y0, c + x0, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def canonical_rays(pixels: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels (B, R, 2) or (R, 2) full-frame pixel coordinates, pose (B, 3, 4) -> origins (B, R, 3),
    direction (B, 1, 3) per unit of pixel-space depth, both in canonical head space."""
    a, t = pose[:, :, :3], pose[:, :, 3]
    s2 = (a * a).sum(dim=(1, 2)) / 3.0  # s^2: every row of s R has norm s
    a_inv = a.transpose(1, 2) / s2[:, None, None]
    if pixels.dim() == 2:
        pixels = pixels.unsqueeze(0).expand(pose.shape[0], -1, -1)
    p = torch.cat([pixels - t[:, None, :2], -t[:, None, 2:3].expand(-1, pixels.shape[1], 1)], dim=-1)
    origins = torch.einsum("bij,brj->bri", a_inv, p)
    direction = a_inv[:, :, 2].unsqueeze(1)
    return origins, direction


def ray_points(origins: torch.Tensor, direction: torch.Tensor,
               depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """origins (B, R, 3), direction (B, 1, 3), depths (B, R, S) -> x, y, z (B, R*S) of the points o + z d, ray
    by ray. Three coordinate tensors, the form the field reads, not one (B, R*S, 3) tensor: that one the
    exported graphs computed as broadcasts over a size-3 last axis, which ONNX Runtime runs 3 floats at a time
    (~0.7 ms of the 20 ms coarse field graph at 1 thread; ~0.1 ms like this). Same products and sums, so the
    same points bit for bit."""
    return tuple((o.unsqueeze(-1) + depths * d.unsqueeze(-1)).flatten(1)
                 for o, d in zip(origins.unbind(-1), direction.unbind(-1)))


def intersect_box(origins: torch.Tensor, direction: torch.Tensor, box_min: torch.Tensor,
                  box_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test of rays against the canonical head box. origins (B, R, 3), direction (B, 1, 3) ->
    near (B, R, 1), far (B, R, 1), hit (B, R, 1) float (1 where the ray crosses the box). No boolean indexing:
    missed rays get a tiny valid interval and are zeroed by `hit`."""
    eps = 1e-6
    d = torch.where(direction.abs() < eps, torch.full_like(direction, eps), direction)
    t0 = (box_min - origins) / d
    t1 = (box_max - origins) / d
    near = torch.minimum(t0, t1).amax(dim=-1, keepdim=True)
    far = torch.maximum(t0, t1).amin(dim=-1, keepdim=True)
    hit = (far > near).to(origins.dtype)
    far = torch.maximum(far, near + 1e-3)
    return near, far, hit
