"""Samples along each ray inside its box interval: stratified (jittered) in training, mid-points at inference."""

from __future__ import annotations

import torch


def sample_along_rays(near: torch.Tensor, far: torch.Tensor, n_samples: int,
                      jitter: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """near, far (B, R, 1) -> depths (B, R, S), deltas (B, R, S) (the length each sample stands for)."""
    bins = torch.arange(n_samples, dtype=near.dtype, device=near.device)
    offset = torch.rand(near.shape[:-1] + (n_samples,), device=near.device) if jitter else 0.5
    u = (bins + offset) / n_samples
    span = far - near
    depths = near + span * u
    deltas = (span / n_samples).expand_as(depths)
    return depths, deltas
