"""GA-Module: Global Aggregation of the aligned representation into the radiance field.

Each sample point's explicit spatial feature (from the tri-plane) forms a query that attends over all aligned
tokens (B, T, C), so a point near the mouth can weigh the audio/mouth tokens and a point at the eyes the eyes
token. The aggregated condition is decoded with the spatial feature to density, colour and a small feature
vector (rendered per ray and handed to the refiner).

Evaluated per frame, not per point: the tokens are the same for every point of a frame, so the key projection
is folded into the query weights (logits = (K_blk^T W_q) s + K_blk^T b_q) and the value projection into the
decoder's first layer (W_1a V^T w). Per point that leaves two matmuls into the first hidden layer and no
per-point query, value or concatenation. Points are channel-first (B, F, P) so every step is one batched
matmul over contiguous memory, with no per-point transposes (these copies were a quarter of a frame's CPU time).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def token_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 2 of (B, H, T, P) logits. Exported to ONNX it is written out: ONNX Runtime's Softmax over
    a non-last axis transposes it last and back and runs rows of T floats (1.1 ms at 1 thread on the coarse
    tier; ~0.3 ms as max, exp, sum and a multiply by the reciprocal along whole rows of P points). The sum is a
    pairwise tree, the order in which ONNX Runtime's Softmax kernel added a row of 8 on the (AVX-512) machine
    measured, and the reciprocal-multiply is its too: with 8 tokens the graph gave the Softmax op's values bit
    for bit there (one ReduceSum was ~0.03 ms faster and moved weights by up to 2.4e-7). Eager PyTorch keeps
    its single fused softmax."""
    if not torch.onnx.is_in_onnx_export():
        return torch.softmax(logits, dim=2)
    e = (logits - logits.amax(dim=2, keepdim=True)).exp()
    total = e
    while total.shape[2] > 1:
        t = total.shape[2]
        total = total.unflatten(2, (t // 2, 2)).sum(dim=3) if t % 2 == 0 else total.sum(dim=2, keepdim=True)
    return e * total.reciprocal()


class GAModule(nn.Module):
    """spatial (B, Fs, P), cond (B, T, C) -> density (B, P) >= 0, rgb (B, 3, P) in [0, 1], feat (B, F, P).

    The parameters are those of textbook multi-head attention (query from the point's feature; key, value from
    the tokens) followed by an MLP on [feature, aggregate]; `forward` computes exactly that function."""

    def __init__(self, spatial_dim: int, cond_dim: int, dim: int = 32, heads: int = 2, hidden: int = 64,
                 feat_channels: int = 8, density_scale: float = 10.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError("GA dim must be divisible by heads")
        self.heads, self.head_dim = heads, dim // heads
        self.spatial_dim = spatial_dim
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

    def block_mask(self, t: int) -> torch.Tensor:
        """(dim, H*T): 1 where channel c belongs to the head of column j (keys/values laid out per head)."""
        c = torch.arange(self.heads * self.head_dim, device=self.query.weight.device) // self.head_dim
        col = torch.arange(self.heads * t, device=self.query.weight.device) // t
        return (c[:, None] == col[None, :]).to(self.query.weight.dtype)

    def per_frame(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cond (B, T, C) -> logit weights (B, H*T, Fs), logit bias (B, H*T, 1), first-layer weights of the
        attention weights (B, hidden, H*T)."""
        t, h = cond.shape[1], self.heads
        mask = self.block_mask(t)
        k_blk = self.key(cond).transpose(1, 2).repeat(1, 1, h) * mask / math.sqrt(self.head_dim)  # (B, dim, H*T)
        v_blk = self.value(cond).repeat(1, h, 1) * mask.T  # (B, H*T, dim)
        k_t = k_blk.transpose(1, 2)  # (B, H*T, dim)
        logit_w = k_t @ self.query.weight  # (B, H*T, Fs)
        logit_b = k_t @ self.query.bias.unsqueeze(-1)  # (B, H*T, 1)
        w1_agg = self.decoder[0].weight[:, self.spatial_dim:]  # (hidden, dim)
        # each head's attention weights sum to 1 over its T columns, so the first layer's bias rides on them:
        # one matmul instead of a matmul plus a broadcast add over every point
        bias = self.decoder[0].bias.view(1, -1, 1) / h
        layer1_w = w1_agg @ v_blk.transpose(1, 2) + bias  # (B, hidden, H*T)
        return logit_w, logit_b, layer1_w

    def forward(self, spatial: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, h, t = spatial.shape[0], self.heads, cond.shape[1]
        logit_w, logit_b, layer1_w = self.per_frame(cond)
        logits = torch.baddbmm(logit_b, logit_w, spatial)  # (B, H*T, P)
        attn = token_softmax(logits.view(b, h, t, -1)).view(b, h * t, -1)
        first, second, last = self.decoder[0], self.decoder[2], self.decoder[4]
        if torch.onnx.is_in_onnx_export():
            # 1x1 convolutions in ONNX: ONNX Runtime adds the bias and the ReLU inside the convolution's GEMM
            # instead of in two more passes over each (B, 64, P) tensor (the same sums, bit for bit); ~1 ms of
            # the coarse field graph at 1 thread
            conv = nn.functional.conv1d
            x = conv(spatial, first.weight[:, :self.spatial_dim, None]).add_(torch.bmm(layer1_w, attn)).relu_()
            x = conv(x, second.weight[:, :, None], second.bias).relu_()
            out = conv(x, last.weight[:, :, None], last.bias)
        else:
            # in-place accumulation, bias and activation: each per-point tensor is written once (no broadcast
            # copies)
            per_batch = lambda w: w.expand(b, -1, -1)  # noqa: E731  (bmm, not matmul: matmul would fold and copy)
            x = torch.bmm(per_batch(first.weight[:, :self.spatial_dim]), spatial).baddbmm_(layer1_w, attn).relu_()
            x = torch.bmm(per_batch(second.weight), x).add_(second.bias.view(1, -1, 1)).relu_()
            out = torch.bmm(per_batch(last.weight), x).add_(last.bias.view(1, -1, 1))  # (B, 4 + F, P)
        density = nn.functional.softplus(out[:, 0]) * self.density_scale
        rgb = torch.sigmoid(out[:, 1:4])
        feat = out[:, 4:]
        return density, rgb, feat
