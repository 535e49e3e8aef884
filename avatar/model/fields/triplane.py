"""Tri-plane spatial features of the canonical head box: three axis-aligned feature planes (xy, xz, yz)
sampled bilinearly with grid_sample (cheap, exports as GridSample) and concatenated."""

from __future__ import annotations

import torch
from torch import nn


class TriPlaneField(nn.Module):
    """points (B, P, 3) canonical, coeffs (B, K) -> spatial features (B, P, 3*C), inside (B, P) (1 in the head
    box, else 0).

    Besides the identity's planes there are K zero-initialised *basis* planes, blended per frame by the
    coefficients (computed from the aligned representation): features = F0 + sum_k c_k F_k, like blendshapes
    in feature space. Their gradient is the error times c_k, so expression-driven changes (mouth opening,
    blinks) are learnt at the planes' fast learning rate instead of waiting for the MLP to discover them."""

    def __init__(self, box_min: tuple[float, float, float], box_max: tuple[float, float, float],
                 resolution: int = 128, channels: int = 16, n_basis: int = 0) -> None:
        super().__init__()
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32))
        self.planes = nn.Parameter(0.1 * torch.randn(3, channels, resolution, resolution))
        self.n_basis = n_basis
        self.basis = nn.Parameter(torch.zeros(3, n_basis * channels, resolution, resolution)) if n_basis else None
        self.channels = channels

    @property
    def out_dim(self) -> int:
        return 3 * self.channels

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        return 2.0 * (points - self.box_min) / (self.box_max - self.box_min) - 1.0

    def forward(self, points: torch.Tensor, coeffs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, _ = points.shape
        c, k = self.channels, self.n_basis
        x = self.normalise(points)
        inside = (x.abs().amax(dim=-1) <= 1.0 + 1e-4).to(points.dtype)
        flat = x.reshape(1, b * p, 3)
        # plane i is indexed by the coordinate pair (x, y), (x, z), (y, z): grid (3, 1, B*P, 2)
        grid = torch.stack([flat[..., [0, 1]], flat[..., [0, 2]], flat[..., [1, 2]]], dim=0)
        planes = self.planes if self.basis is None else torch.cat([self.planes, self.basis], dim=1)
        feats = nn.functional.grid_sample(planes, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)  # (3, C(1+K), 1, B*P)
        feats = feats.view(3, 1 + k, c, b, p)
        out = feats[:, 0]
        if k and coeffs is not None:
            out = out + (feats[:, 1:] * coeffs.t().reshape(1, k, 1, b, 1)).sum(dim=1)
        feats = out.permute(2, 3, 0, 1).reshape(b, p, 3 * c)
        return feats, inside

    def total_variation(self) -> torch.Tensor:
        """Smoothness prior on the planes (unobserved cells stay smooth instead of noisy)."""
        tv = 0.0
        for pl in (self.planes,) if self.basis is None else (self.planes, self.basis):
            tv = tv + (pl[..., 1:, :] - pl[..., :-1, :]).pow(2).mean() + (pl[..., :, 1:] - pl[..., :, :-1]).pow(2).mean()
        return tv
