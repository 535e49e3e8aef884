"""GA-Module: Global Aggregation of the aligned representation into the radiance field.

Each sample point's explicit spatial feature (from the tri-plane) forms a query that attends over all aligned
tokens (B, T, C), so a point near the mouth can weigh the audio/mouth tokens and a point at the eyes the eyes
token. The aggregated condition is decoded with the spatial feature to density, colour and a small feature
vector (rendered per ray and handed to the refiner).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GAModule(nn.Module):
    """spatial (B, P, Fs), cond (B, T, C) -> density (B, P) >= 0, rgb (B, P, 3) in [0, 1], feat (B, P, F)."""

    def __init__(self, spatial_dim: int, cond_dim: int, dim: int = 32, heads: int = 2, hidden: int = 64,
                 feat_channels: int = 8, density_scale: float = 10.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError("GA dim must be divisible by heads")
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(spatial_dim, dim)
        self.key = nn.Linear(cond_dim, dim)
        self.value = nn.Linear(cond_dim, dim)
        self.decoder = nn.Sequential(
            nn.Linear(spatial_dim + dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1 + 3 + feat_channels),
        )
        self.density_scale = density_scale
        self.feat_channels = feat_channels
        with torch.no_grad():  # start semi-transparent so early gradients reach every sample
            self.decoder[-1].bias[0] = -3.0

    def aggregate(self, spatial: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of every point over the T tokens, as two batched matmuls with no per-point
        transposes: keys and values are laid out block-diagonally per head (B, dim, H*T) and (B, H*T, dim)."""
        b, t, h = cond.shape[0], cond.shape[1], self.heads
        q = self.query(spatial)  # (B, P, dim)
        mask = self.block_mask(t).to(spatial.dtype)  # (dim, H*T): 1 where channel c belongs to head of column
        k = self.key(cond).transpose(1, 2).repeat(1, 1, h) * mask / math.sqrt(self.head_dim)  # (B, dim, H*T)
        v = self.value(cond).repeat(1, h, 1) * mask.T  # (B, H*T, dim)
        logits = (q @ k).view(b, -1, h, t)
        w = torch.softmax(logits, dim=-1).view(b, -1, h * t)
        return w @ v

    def block_mask(self, t: int) -> torch.Tensor:
        c = torch.arange(self.heads * self.head_dim) // self.head_dim
        col = torch.arange(self.heads * t) // t
        return (c[:, None] == col[None, :]).to(self.query.weight.device)

    def forward(self, spatial: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        agg = self.aggregate(spatial, cond)
        out = self.decoder(torch.cat([spatial, agg], dim=-1))
        density = nn.functional.softplus(out[..., 0]) * self.density_scale
        rgb = torch.sigmoid(out[..., 1:4])
        feat = out[..., 4:]
        return density, rgb, feat
