"""Brows and eyes from prosody: how things are said (loudness, pitch, rate) -> the non-mouth expression slices.

Features come from the same causal log-mel stream as everything else (no separate pitch tracker), over a
longer window than the renderer's (`PROSODY_WINDOW`, ~0.5 s):
  energy   mean normalised log-mel per mel frame (loudness)
  pitch    centroid of the low band (bins below ~1 kHz), a proxy of the voice's pitch and formants
  rate     mean absolute frame-to-frame energy change (syllable rate)
summarised as mean/std/slope. A ridge regression (closed form, fitted per avatar on its own footage) maps them
to the brows + eyes slices. Small on purpose: the link is weak and a big model would only memorise the clip.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.expression import EXPRESSION_DIM, SLICES

PROSODY_WINDOW = AudioWindow(length=48, lookahead_ms=40.0)
PREDICTED_SLICES = ("brows", "eyes")
N_FEATURES = 8
LOW_BAND = 28  # mel bins below ~1 kHz at 80 mels, 55-7600 Hz


class ProsodyFeatures(nn.Module):
    """(B, L, n_mels) mel windows -> (B, N_FEATURES) prosody statistics."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        energy = mel.mean(dim=-1)  # (B, L)
        low = mel[..., :LOW_BAND]
        bins = torch.arange(LOW_BAND, dtype=mel.dtype, device=mel.device) / LOW_BAND
        w = torch.softmax(4.0 * low, dim=-1)
        pitch = (w * bins).sum(dim=-1)  # (B, L)
        voiced = torch.sigmoid(4.0 * (energy + 0.5))
        rate = (energy[:, 1:] - energy[:, :-1]).abs().mean(dim=-1)
        half = mel.shape[1] // 2
        return torch.stack([
            energy.mean(-1), energy.std(-1), energy[:, half:].mean(-1) - energy[:, :half].mean(-1),
            (pitch * voiced).sum(-1) / (voiced.sum(-1) + 1e-3), pitch.std(-1), rate, voiced.mean(-1),
            energy.amax(-1),
        ], dim=-1)


class ProsodyExpressionPredictor(nn.Module):
    """(B, L, n_mels) causal mel windows of length PROSODY_WINDOW.length -> (B, 6) brows + eyes slices."""

    def __init__(self) -> None:
        super().__init__()
        self.features = ProsodyFeatures()
        self.out_dim = sum(SLICES[s].stop - SLICES[s].start for s in PREDICTED_SLICES)
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        self.linear = nn.Linear(N_FEATURES, self.out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def window(self) -> AudioWindow:
        return PROSODY_WINDOW

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.linear((self.features(mel) - self.mean) / self.std)

    @torch.no_grad()
    def predict_expression(self, mel: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """(B, L, n_mels) -> (B, 20): `base` (default neutral) with its brows and eyes replaced."""
        pred = self(torch.as_tensor(mel, dtype=torch.float32, device=self.mean.device)).cpu().numpy()
        out = np.zeros((len(pred), EXPRESSION_DIM), np.float32) if base is None else np.array(base, np.float32)
        col = 0
        for name in PREDICTED_SLICES:
            s = SLICES[name]
            out[:, s.start:s.stop] = pred[:, col:col + s.stop - s.start]
            col += s.stop - s.start
        return out

    @torch.no_grad()
    def fit(self, mel_windows: np.ndarray, expression: np.ndarray, ridge: float = 1.0) -> None:
        """Closed-form ridge regression on (N, L, n_mels) windows and their (N, 20) expressions."""
        x = self.features(torch.as_tensor(mel_windows, dtype=torch.float32)).double()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
        xs = (x - mean) / std
        y = torch.as_tensor(np.concatenate([expression[:, SLICES[s].indices] for s in PREDICTED_SLICES], 1)).double()
        y_mean = y.mean(0)
        a = xs.T @ xs + ridge * len(xs) * 0.01 * torch.eye(N_FEATURES, dtype=torch.float64)
        w = torch.linalg.solve(a, xs.T @ (y - y_mean))  # (F, out)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.linear.weight.copy_(w.T.float())
        self.linear.bias.copy_(y_mean.float())
