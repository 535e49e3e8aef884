"""Volume rendering (emission-absorption) without cumprod: transmittance as exp(exclusive cumsum(log(1-a)))."""

from __future__ import annotations

import torch


def render_weights(density: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """density (B, R, S) per unit canonical length, deltas (B, R, S) canonical lengths -> weights (B, R, S)."""
    alpha = 1.0 - torch.exp(-density * deltas)
    log_t = torch.cumsum(torch.log(1.0 - alpha + 1e-7), dim=-1)
    log_t = torch.cat([torch.zeros_like(log_t[..., :1]), log_t[..., :-1]], dim=-1)  # exclusive
    return alpha * torch.exp(log_t)


def composite_along_rays(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """weights (B, R, S), values channel-first (B, K, R, S) -> (B, K, R)."""
    return (weights.unsqueeze(1) * values).sum(dim=-1)


def unpremultiply(rgb_premult: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """Straight colour from premultiplied colour and opacity (stable where the opacity vanishes, since the
    compositor multiplies by it again)."""
    return (rgb_premult / (acc + 1e-3)).clamp(0.0, 1.0)
