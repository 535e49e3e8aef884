"""Tri-plane spatial features of the canonical head box: three axis-aligned feature planes (xy, xz, yz)
sampled bilinearly with grid_sample (cheap, exports as GridSample) and concatenated."""

from __future__ import annotations

import torch
from torch import nn


class TriPlaneField(nn.Module):
    """points (B, P, 3) canonical -> spatial features (B, P, 3*C), inside (B, P) (1 in the head box, else 0)."""

    def __init__(self, box_min: tuple[float, float, float], box_max: tuple[float, float, float],
                 resolution: int = 128, channels: int = 16) -> None:
        super().__init__()
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32))
        self.planes = nn.Parameter(0.1 * torch.randn(3, channels, resolution, resolution))
        self.channels = channels

    @property
    def out_dim(self) -> int:
        return 3 * self.channels

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        return 2.0 * (points - self.box_min) / (self.box_max - self.box_min) - 1.0

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, _ = points.shape
        x = self.normalise(points)
        inside = (x.abs().amax(dim=-1) <= 1.0 + 1e-4).to(points.dtype)
        flat = x.reshape(1, b * p, 3)
        # plane i is indexed by the coordinate pair (x, y), (x, z), (y, z): grid (3, 1, B*P, 2)
        grid = torch.stack([flat[..., [0, 1]], flat[..., [0, 2]], flat[..., [1, 2]]], dim=0)
        feats = nn.functional.grid_sample(self.planes, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)  # (3, C, 1, B*P)
        feats = feats.squeeze(2).permute(2, 0, 1).reshape(b, p, 3 * self.channels)
        return feats, inside

    def total_variation(self) -> torch.Tensor:
        """Smoothness prior on the planes (unobserved cells stay smooth instead of noisy)."""
        dx = (self.planes[..., 1:, :] - self.planes[..., :-1, :]).pow(2).mean()
        dy = (self.planes[..., :, 1:] - self.planes[..., :, :-1]).pow(2).mean()
        return dx + dy
