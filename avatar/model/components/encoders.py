"""Audio encoder (mel window -> tokens) and expression encoder (expression vector -> one token per slice)."""

from __future__ import annotations

import torch
from torch import nn

from ideal.avatar.expression import EXPRESSION_DIM, SLICES


def set_input_stats(module: nn.Module, samples: torch.Tensor, dims: tuple[int, ...]) -> None:
    """Set an encoder's input_mean/input_std from training inputs (std floored so constant inputs stay finite)."""
    with torch.no_grad():
        module.input_mean.copy_(samples.mean(dim=dims))
        module.input_std.copy_(samples.std(dim=dims).clamp_min(1e-2))


class AudioEncoder(nn.Module):
    """(B, W, n_mels) causal log-mel window -> (B, W // 4, C) tokens: a 1-D conv stack over time that halves
    the length twice, so each token summarises ~40 ms (one video frame) of speech."""

    def __init__(self, n_mels: int = 80, window: int = 16, dim: int = 64) -> None:
        super().__init__()
        if window % 4:
            raise ValueError(f"audio window length must be a multiple of 4, got {window}")
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, dim, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv1d(dim, dim, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv1d(dim, dim, 3, stride=2, padding=1),
        )
        self.n_tokens = window // 4
        self.position = nn.Parameter(torch.zeros(1, self.n_tokens, dim))
        # per-mel-bin standardisation with the training clip's statistics (set by the trainer)
        self.register_buffer("input_mean", torch.zeros(n_mels))
        self.register_buffer("input_std", torch.ones(n_mels))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = (audio - self.input_mean) / self.input_std
        x = self.net(audio.transpose(1, 2))  # (B, C, W/4)
        return x.transpose(1, 2) + self.position


class ExpressionEncoder(nn.Module):
    """(B, 20) expression -> (B, n_slices, C): one token per named slice (mouth, brows, eyes, gaze), so the
    attention downstream can weigh e.g. the eyes token for the eye region."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.slices = [(s.start, s.stop) for s in SLICES.values()]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(b - a, dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim)) for a, b in self.slices)
        self.n_tokens = len(self.slices)
        self.position = nn.Parameter(torch.zeros(1, self.n_tokens, dim))
        assert self.slices[-1][1] == EXPRESSION_DIM
        # Standardisation with the training clip's statistics (set by the trainer). Raw fields vary by
        # 0.03-0.3 between frames; without it the tokens barely changed with the expression and an
        # 8-minute avatar ignored the mouth input.
        self.register_buffer("input_mean", torch.zeros(EXPRESSION_DIM))
        self.register_buffer("input_std", torch.ones(EXPRESSION_DIM))

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        expression = (expression - self.input_mean) / self.input_std
        tokens = [h(expression[:, a:b]) for h, (a, b) in zip(self.heads, self.slices)]
        return torch.stack(tokens, dim=1) + self.position
