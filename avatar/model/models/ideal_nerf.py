"""IDEAL-NeRF composed into the three exportable stages.

    ConditionEncoder: audio (B, W, 80), expression (B, 20)          -> cond (B, T, C)
    HeadRenderer[t]:  cond (B, T, C), pose (B, 3, 4)                 -> rgb (B,3,r,r), alpha (B,1,r,r), feat (B,F,r,r)
    Refiner[t]:       rgb, alpha, feat                               -> rgb (B,3,S,S), alpha (B,1,S,S)

All shapes are static per tier except the batch; no cumprod, no boolean indexing, no data-dependent control
flow in any forward. `IdealNeRF` owns every weight (one state dict) and builds the per-tier stage modules,
which share the field.
"""

from __future__ import annotations

import torch
from torch import nn

from ideal.avatar.backend import Tier
from ideal.avatar.model.components.culling import RayCulling, pack_rays, unpack_rays
from ideal.avatar.model.components.eaa import make_fusion
from ideal.avatar.model.components.encoders import AudioEncoder, ExpressionEncoder
from ideal.avatar.model.components.ga import GAModule
from ideal.avatar.model.components.rays import canonical_rays, crop_pixel_grid, intersect_box, ray_points
from ideal.avatar.model.components.refiner import Refiner, bilinear_upsample
from ideal.avatar.model.components.renderer import composite_along_rays, render_weights, unpremultiply
from ideal.avatar.model.components.samplers import sample_along_rays
from ideal.avatar.model.config import ModelConfig
from ideal.avatar.model.fields.triplane import TriPlaneField


class ConditionEncoder(nn.Module):
    """Audio encoder + expression encoder + EAA (or concat): (B, W, 80), (B, 20) -> aligned tokens (B, T, C)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.audio = AudioEncoder(cfg.n_mels, cfg.audio_window, cfg.token_dim)
        self.expression = ExpressionEncoder(cfg.token_dim)
        self.fusion = make_fusion(cfg.fusion, cfg.token_dim, cfg.eaa_heads, cfg.eaa_layers)

    @property
    def n_tokens(self) -> int:
        return self.audio.n_tokens + self.expression.n_tokens

    def forward(self, audio: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.audio(audio), self.expression(expression))


class RayRenderer(nn.Module):
    """Field + GA-Module + volume rendering of arbitrary crop rays (training renders random rays and patches
    through this; HeadRenderer fixes the rays to a tier's grid). `n_tokens`: the condition's T."""

    def __init__(self, cfg: ModelConfig, n_tokens: int) -> None:
        super().__init__()
        self.field = TriPlaneField(cfg.box_min, cfg.box_max, cfg.plane_res, cfg.plane_channels, cfg.n_basis)
        self.blend = nn.Linear(n_tokens * cfg.token_dim, cfg.n_basis) if cfg.n_basis else None
        self.ga = GAModule(self.field.out_dim, cfg.token_dim, cfg.ga_dim, cfg.ga_heads, cfg.hidden,
                           cfg.feat_channels, cfg.density_scale)

    def forward(self, cond: torch.Tensor, pose: torch.Tensor, pixels: torch.Tensor, n_samples: int,
                jitter: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cond (B, T, C), pose (B, 3, 4), pixels (R, 2) or (B, R, 2) full-frame pixel coordinates ->
        straight rgb (B, 3, R), opacity (B, 1, R), features (B, F, R) (channel-first, like the images)."""
        origins, direction = canonical_rays(pixels, pose)
        near, far, hit = intersect_box(origins, direction, self.field.box_min, self.field.box_max)
        depths, deltas = sample_along_rays(near, far, n_samples, jitter)  # (B, R, S)
        b, r, s = depths.shape
        points = ray_points(origins, direction, depths)  # x, y, z (B, R*S)
        coeffs = self.blend(cond.flatten(1)) if self.blend is not None else None  # (B, K) basis weights
        spatial, inside = self.field(points, coeffs)  # (B, Fs, R*S)
        density, rgb, feat = self.ga(spatial, cond)
        density = (density * inside).view(b, r, s) * hit
        step = deltas * direction.norm(dim=-1, keepdim=True)  # pixel depth -> canonical length
        weights = render_weights(density, step)
        acc = weights.sum(dim=-1).unsqueeze(1)  # (B, 1, R)
        rgb_p = composite_along_rays(weights, rgb.view(b, 3, r, s))
        feat_r = composite_along_rays(weights, feat.view(b, -1, r, s))
        return unpremultiply(rgb_p, acc), acc, feat_r


class HeadRenderer(nn.Module):
    """One tier's head pass over the fixed crop: cond (B, T, C), pose (B, 3, 4) ->
    rgb (B, 3, r, r) straight colour, alpha (B, 1, r, r), feat (B, F, r, r)."""

    def __init__(self, rays: RayRenderer, tier: Tier, crop: tuple[float, float, float]) -> None:
        super().__init__()
        self.rays = rays
        self.tier = tier
        self.crop = crop
        self.register_buffer("pixels", crop_pixel_grid(crop, tier.rays), persistent=False)
        self.culling: RayCulling | None = None
        self.budget, self.footprint = tier.rays * tier.rays, 0

    def cull(self, culling: RayCulling | None, budget: int | None = None, footprint: int = 0) -> None:
        """Render only the rays the avatar's occupancy grid says can meet the head (avatar.model.components.culling),
        `budget` of them per frame; None renders every ray of the grid."""
        self.culling = culling
        self.budget = self.pixels.shape[0] if culling is None or budget is None else int(budget)
        self.footprint = int(footprint)

    def forward(self, cond: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, r = pose.shape[0], self.tier.rays
        if self.culling is None or self.budget >= r * r:
            rgb, acc, feat = self.rays(cond, pose, self.pixels, self.tier.samples)
        else:
            mask = self.culling.ray_mask(pose, self.crop, r, self.footprint)
            index = pack_rays(mask, self.budget)  # (B, K)
            rgb_k, acc_k, feat_k = self.rays(cond, pose, self.pixels[index], self.tier.samples)
            full = unpack_rays(torch.cat([rgb_k, acc_k, feat_k], dim=1), index, r * r)  # (B, 4 + F, R)
            rgb, acc, feat = full[:, :3], full[:, 3:4], full[:, 4:]
        return rgb.reshape(n, 3, r, r), acc.reshape(n, 1, r, r), feat.reshape(n, -1, r, r)


class BilinearRefiner(nn.Module):
    """The unrefined path with the Refiner's signature (tiers with refine=False)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, rgb: torch.Tensor, alpha: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        del feat
        return bilinear_upsample(rgb, alpha, self.size)


class IdealNeRF(nn.Module):
    """All weights of one avatar. `crop` = (x0, y0, size) of the fixed square head crop in full-frame pixels."""

    def __init__(self, cfg: ModelConfig, crop: tuple[float, float, float]) -> None:
        super().__init__()
        self.cfg = cfg
        self.crop = tuple(float(c) for c in crop)
        self.encoder = ConditionEncoder(cfg)
        self.ray_renderer = RayRenderer(cfg, self.encoder.n_tokens)
        refiners = {}
        for name, tier in cfg.tiers.items():
            if tier.output % tier.rays:
                raise ValueError(f"tier {name}: output {tier.output} is not a multiple of rays {tier.rays}")
            if tier.refine:
                refiners[name] = Refiner(cfg.feat_channels, tier.output // tier.rays, cfg.refiner_channels)
        self.refiners = nn.ModuleDict(refiners)
        self.heads = {name: HeadRenderer(self.ray_renderer, tier, self.crop) for name, tier in cfg.tiers.items()}

    def set_culling(self, grid: torch.Tensor | None, budgets: dict[str, dict[str, int]] | None = None) -> None:
        """Attach the avatar's occupancy grid and per-tier {"rays": budget, "footprint": half-width} (from
        avatar.model.components.culling.ray_budgets); None renders every ray, as do tiers without a budget."""
        culling = None if grid is None else RayCulling(grid, self.ray_renderer.field.box_min,
                                                        self.ray_renderer.field.box_max)
        for name, head in self.heads.items():
            b = (budgets or {}).get(name)
            head.cull(culling if b else None, b["rays"] if b else None, b["footprint"] if b else 0)

    # --- the exportable stages -------------------------------------------------------------------------
    def head_renderer(self, tier: str) -> HeadRenderer:
        return self.heads[tier].to(self.ray_renderer.field.planes.device)

    def refiner(self, tier: str) -> nn.Module:
        if tier in self.refiners:
            return self.refiners[tier]
        return BilinearRefiner(self.cfg.tiers[tier].output)

    # --- convenience ---------------------------------------------------------------------------------------
    def render(self, audio: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
               tier: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W, 80), (B, 20), (B, 3, 4) -> rgb (B, 3, S, S), alpha (B, 1, S, S) at the tier's output size."""
        cond = self.encoder(audio, expression)
        rgb, alpha, feat = self.head_renderer(tier)(cond, pose)
        return self.refiner(tier)(rgb, alpha, feat)
