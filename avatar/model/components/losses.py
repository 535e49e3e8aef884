"""Training losses: photometric on the composite, opacity vs the head mask, tri-plane smoothness."""

from __future__ import annotations

import torch


def composite(rgb: torch.Tensor, alpha: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Straight colour over the base (same layout, channel last or first as long as alpha broadcasts)."""
    return rgb * alpha + base * (1.0 - alpha)


def photometric_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE plus a small L1 (sharper edges than MSE alone)."""
    err = pred - target
    return err.pow(2).mean() + 0.1 * err.abs().mean()


def opacity_loss(alpha: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Pushes opacity to 1 inside the head mask and 0 outside; without it density collapses (the static
    background already explains most pixels)."""
    return (alpha - head).pow(2).mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = (pred - target).pow(2).mean().clamp_min(1e-10)
    return float(-10.0 * torch.log10(mse))
