"""EAA-Module: Expression-Audio Alignment by multi-head self-attention over the joint token sequence.

Audio tokens and expression tokens (each tagged with a learned modality embedding) are concatenated into one
sequence; every position attends to every position of both modalities (pre-norm transformer layers), so each
audio token is re-expressed in terms of the expression and vice versa. The output sequence is the
expression-audio aligned representation (B, T, C).

`ConcatFusion` is the paper's ablation: the same token sequence stacked side by side with a per-token MLP of
the same width, but no exchange between positions.
"""

from __future__ import annotations

import torch
from torch import nn


class EAALayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        # the attention branch starts silent (zero output projection), so a fresh EAA layer is exactly the
        # ablation's per-token MLP layer and the exchange between positions grows in as training finds it
        # useful; with a random projection the untrained attention mixed noise into every token at first
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        return x + self.ffn(self.norm2(x))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, T) head-averaged attention weights of this layer on input x (for inspection only)."""
        h = self.norm1(x)
        return self.attn(h, h, h, need_weights=True, average_attn_weights=True)[1]


class EAAModule(nn.Module):
    """(B, Ta, C) audio tokens, (B, Te, C) expression tokens -> (B, Ta + Te, C) aligned tokens."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.modality = nn.Parameter(torch.zeros(2, dim))
        nn.init.normal_(self.modality, std=0.02)
        self.layers = nn.ModuleList(EAALayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, audio_tokens: torch.Tensor, expression_tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([audio_tokens + self.modality[0], expression_tokens + self.modality[1]], dim=1)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    @torch.no_grad()
    def attention_maps(self, audio_tokens: torch.Tensor, expression_tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per layer (B, T, T) attention weights: how much each position weighs each other position."""
        x = torch.cat([audio_tokens + self.modality[0], expression_tokens + self.modality[1]], dim=1)
        maps = []
        for layer in self.layers:
            maps.append(layer.attention(x))
            x = layer(x)
        return maps


class ConcatFusion(nn.Module):
    """Ablation: plain concatenation of the two modalities' tokens, per-token MLP, no cross-modal attention."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        del heads
        self.modality = nn.Parameter(torch.zeros(2, dim))
        nn.init.normal_(self.modality, std=0.02)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, audio_tokens: torch.Tensor, expression_tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([audio_tokens + self.modality[0], expression_tokens + self.modality[1]], dim=1)
        for layer in self.layers:
            x = x + layer(x)
        return self.norm(x)


def make_fusion(kind: str, dim: int, heads: int, layers: int) -> nn.Module:
    if kind == "eaa":
        return EAAModule(dim, heads, layers)
    if kind == "concat":
        return ConcatFusion(dim, heads, layers)
    raise ValueError(f"unknown fusion {kind!r} (expected 'eaa' or 'concat')")
