"""Tri-plane spatial features of the canonical head box: three axis-aligned feature planes (xy, xz, yz)
sampled bilinearly (avatar.model.fields.lookup) and concatenated."""

from __future__ import annotations

import torch
from torch import nn

from ideal.avatar.model.fields.lookup import gather_table_lookup, grid_sample_xy_lookup

# the field's plane lookups by name (export.onnx_export.PLANE_LOOKUPS): (lookup(planes, x, y), whether it takes
# the planes channel-last (N, R, R, C) instead of channel-first (N, C, R, R))
LOOKUPS = {"grid_sample": (grid_sample_xy_lookup, False), "gather": (gather_table_lookup, True)}


class TriPlaneField(nn.Module):
    """points (B, P, 3) canonical (or their x, y, z as three (B, P) tensors), coeffs (B, K) -> spatial features
    (B, 3*C, P), inside (B, P) (1 in the head box, else 0).

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
        # lookup(planes, x, y): grid_sample in PyTorch; the exporter swaps in the gather lookup for ONNX graphs
        # (avatar.model.fields.lookup, `set_lookup`)
        self.lookup, self.channels_last = grid_sample_xy_lookup, False

    def set_lookup(self, name: str) -> None:
        """Sample the planes with LOOKUPS[name] (and blend them in the layout it reads)."""
        self.lookup, self.channels_last = LOOKUPS[name]

    @property
    def out_dim(self) -> int:
        return 3 * self.channels

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        """points (..., 3) -> (..., 3), the box mapped onto [-1, 1]^3."""
        return torch.stack(self.normalise_axes(points), dim=-1)

    def normalise_axes(self, points: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """points (..., 3) or their three coordinates (...) -> u, v, w (...): `normalise` per axis, split first
        and scaled by scalars (in ONNX Runtime a (3,)-vector broadcast over (..., 3) ran 3 floats at a time,
        ~10x slower per element). The arithmetic is the vector form's, op for op, so the result is
        bit-identical; folding it into one multiply-add moved features by up to 1e-4 on the built-in avatar."""
        extent = self.box_max - self.box_min
        axes = points.unbind(-1) if isinstance(points, torch.Tensor) else points
        return tuple(2.0 * (p - self.box_min[i]) / extent[i] - 1.0 for i, p in enumerate(axes))

    def frame_planes(self, coeffs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The planes of each frame, (B*3, C, R, R): F0 + sum_k c_k F_k. Blending the planes once per frame
        and sampling once is the same function as sampling all 1 + K planes per point and blending the
        features (bilinear sampling is linear in the plane values), at 1/(1 + K) of the per-point lookups."""
        c, r = self.channels, self.planes.shape[-1]
        if self.basis is None or coeffs is None:
            return self.planes.unsqueeze(0).expand(batch, -1, -1, -1, -1).reshape(batch * 3, c, r, r)
        basis = self.basis.view(3, self.n_basis, c * r * r)
        blended = torch.baddbmm(self.planes.view(3, 1, c * r * r), coeffs.unsqueeze(0).expand(3, -1, -1),
                                basis)  # (3, B, C*R*R)
        return blended.transpose(0, 1).reshape(batch * 3, c, r, r)

    def frame_table(self, coeffs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """`frame_planes` channel-last, (B*3, R, R, C): the layout the gather lookup reads, which the exported
        graphs otherwise made by transposing the blended planes every frame (~0.5 ms of the 20 ms coarse field
        graph at 1 thread). Here the constant planes and basis are transposed instead (in an exported graph that
        folds into the constants), and the blend is one (1, B, K) x (1, K, 3*R*R*C) product, whose output is
        laid out by frame already. Each element is the same sum of the same products as in `frame_planes`.
        The product is batched on purpose: ONNX Runtime pre-packs a constant 2-D right-hand side (MatMul or a
        Gemm with the planes as bias, ~0.1 ms faster), and the packed kernel rounded a fifth of the texels of a
        single frame differently (up to 3e-8, 3e-5 on the straight colour of nearly transparent pixels)."""
        c, r = self.channels, self.planes.shape[-1]
        planes = self.planes.permute(0, 2, 3, 1).reshape(1, 1, 3 * r * r * c)
        if self.basis is None or coeffs is None:
            return planes.expand(1, batch, -1).reshape(batch * 3, r, r, c)
        basis = self.basis.view(3, self.n_basis, c, r, r).permute(1, 0, 3, 4, 2).reshape(1, self.n_basis, -1)
        return torch.baddbmm(planes, coeffs.unsqueeze(0), basis).view(batch * 3, r, r, c)

    def forward(self, points: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                coeffs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, P, 3) or their x, y, z as three (B, P) tensors, coeffs (B, K) -> features (B, 3*C, P)
        channel-first, inside (B, P)."""
        u, v, w = self.normalise_axes(points)  # (B, P) each
        b, p = u.shape
        inside = (torch.maximum(torch.maximum(u.abs(), v.abs()), w.abs()) <= 1.0 + 1e-4).to(u.dtype)
        # plane i (xy, xz, yz) is indexed by the pair (first[i], second[i]); kept as two (B*3, P) tensors, not
        # an (B*3, P, 2) grid, so the exported graph never picks components out of a size-2 axis
        first = torch.stack((u, u, v), dim=1).view(b * 3, p)
        second = torch.stack((v, w, w), dim=1).view(b * 3, p)
        planes = self.frame_table(coeffs, b) if self.channels_last else self.frame_planes(coeffs, b)
        feats = self.lookup(planes, first, second)  # (B*3, C, P)
        return feats.reshape(b, 3 * self.channels, p), inside

    def total_variation(self) -> torch.Tensor:
        """Smoothness prior on the planes (unobserved cells stay smooth instead of noisy)."""
        tv = 0.0
        for pl in (self.planes,) if self.basis is None else (self.planes, self.basis):
            tv = (tv + (pl[..., 1:, :] - pl[..., :-1, :]).pow(2).mean()
                  + (pl[..., :, 1:] - pl[..., :, :-1]).pow(2).mean())
        return tv
