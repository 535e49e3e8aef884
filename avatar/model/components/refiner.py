"""Refiner: a small learned upsampler that reuses the coarse render (colour, opacity, ray features) instead of
rendering more rays: bilinear upsampling plus a residual predicted at the ray resolution and pixel-shuffled
to the output size (cost ~ a few ms on a CPU)."""

from __future__ import annotations

import torch
from torch import nn


class Refiner(nn.Module):
    """rgb (B, 3, r, r), alpha (B, 1, r, r), feat (B, F, r, r) -> rgb (B, 3, S, S), alpha (B, 1, S, S), S = r*k."""

    def __init__(self, feat_channels: int = 8, factor: int = 4, channels: int = 32) -> None:
        super().__init__()
        self.factor = factor
        self.net = nn.Sequential(
            nn.Conv2d(4 + feat_channels, channels, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 4 * factor * factor, 3, padding=1),
            nn.PixelShuffle(factor),
        )
        with torch.no_grad():  # start as plain bilinear upsampling
            self.net[-2].weight.mul_(0.01)
            self.net[-2].bias.zero_()

    def forward(self, rgb: torch.Tensor, alpha: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([rgb, alpha], dim=1)
        up = nn.functional.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        out = up + self.net(torch.cat([x, feat], dim=1))
        out = out.clamp(0.0, 1.0)
        return out[:, :3], out[:, 3:4]


def bilinear_upsample(rgb: torch.Tensor, alpha: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unrefined path: (B, 3|1, r, r) -> (B, 3|1, size, size)."""
    x = nn.functional.interpolate(torch.cat([rgb, alpha], dim=1), size=(size, size), mode="bilinear",
                                  align_corners=False)
    return x[:, :3], x[:, 3:4]
