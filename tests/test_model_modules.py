"""Shapes, gradients and the geometry of each model module (synthetic tensors; no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ideal.avatar.backend import Tier
from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.avatar.model.components.eaa import ConcatFusion, EAAModule, make_fusion
from ideal.avatar.model.components.encoders import AudioEncoder, ExpressionEncoder
from ideal.avatar.model.components.ga import GAModule, token_softmax
from ideal.avatar.model.components.prosody import PROSODY_WINDOW, ProsodyExpressionPredictor
from ideal.avatar.model.components.rays import canonical_rays, crop_pixel_grid, intersect_box, ray_points
from ideal.avatar.model.components.refiner import Refiner
from ideal.avatar.model.components.renderer import render_weights
from ideal.avatar.model.config import ModelConfig
from ideal.avatar.model.fields.triplane import TriPlaneField
from ideal.avatar.model.models import IdealNeRF

B = 2
CROP = (40.0, 20.0, 320.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rotation(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (math.cos, math.sin))
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return (rz @ rx @ ry).float()


def head_pose(batch: int = B) -> torch.Tensor:
    """Poses of a head ~200 px tall in the middle of the crop, slightly turned."""
    poses = []
    for i in range(batch):
        r = rotation(0.1 * i, -0.05, 0.03 * i)
        t = torch.tensor([200.0 + 5 * i, 170.0, 3.0])
        poses.append(torch.cat([200.0 * r, t[:, None]], dim=1))
    return torch.stack(poses)


def tiny_cfg(fusion: str = "eaa") -> ModelConfig:
    return ModelConfig(fusion=fusion, plane_res=32, plane_channels=4, token_dim=32, hidden=32, ga_dim=16,
                       refiner_channels=8, tiers={"coarse": Tier("coarse", 16, 6, 64, True),
                                                  "refined": Tier("refined", 32, 8, 64, True)})


def test_audio_and_expression_encoders_shapes_and_gradients():
    audio = torch.randn(B, 16, 80, requires_grad=True)
    expr = torch.randn(B, EXPRESSION_DIM, requires_grad=True)
    a = AudioEncoder(80, 16, 32)(audio)
    e = ExpressionEncoder(32)(expr)
    assert a.shape == (B, 4, 32) and e.shape == (B, len(SLICES), 32)
    (a.square().mean() + e.square().mean()).backward()
    assert audio.grad.abs().sum() > 0 and expr.grad.abs().sum() > 0


def test_expression_tokens_follow_their_slices():
    enc = ExpressionEncoder(16)
    x = torch.zeros(1, EXPRESSION_DIM)
    y = x.clone()
    y[0, SLICES["eyes"].start] = 3.0  # a blink changes only the eyes token
    d = (enc(x) - enc(y)).abs().sum(-1)[0]
    names = list(SLICES)
    assert d[names.index("eyes")] > 0
    assert all(d[i] == 0 for i, n in enumerate(names) if n != "eyes")


def test_eaa_mixes_modalities_and_concat_does_not():
    """The ablation switch: with EAA every audio position depends on the expression tokens once trained; with
    plain concatenation the audio positions ignore them whatever the weights. A fresh EAA starts with its
    attention branch silent (zero output projection): exactly the ablation's per-token function."""
    torch.manual_seed(0)
    a = torch.randn(B, 4, 32)
    e1, e2 = torch.randn(B, 4, 32), torch.randn(B, 4, 32)
    eaa, cat = EAAModule(32, 4, 2), ConcatFusion(32, 4, 2)
    for m in (eaa, cat):
        out = m(a, e1)
        assert out.shape == (B, 8, 32)
    assert torch.allclose(eaa(a, e1)[:, :4], eaa(a, e2)[:, :4])  # fresh: no exchange yet
    # a task only the exchange can solve (audio positions must report the expression tokens' mean), a few steps
    opt = torch.optim.Adam([*eaa.parameters(), *cat.parameters()], lr=1e-2)
    for _ in range(20):
        e = torch.randn(B, 4, 32)
        loss = sum((m(a, e)[:, :4] - e.mean(1, keepdim=True)).square().mean() for m in (eaa, cat))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (eaa(a, e1)[:, :4] - eaa(a, e2)[:, :4]).abs().max() > 1e-2
    assert torch.allclose(cat(a, e1)[:, :4], cat(a, e2)[:, :4])
    maps = eaa.attention_maps(a, e1)
    assert len(maps) == 2 and maps[0].shape == (B, 8, 8)
    assert torch.allclose(maps[0].sum(-1), torch.ones(B, 8), atol=1e-5)
    # cross-modal weight: audio rows put mass on expression columns
    assert maps[0][:, :4, 4:].sum() > 0
    with pytest.raises(ValueError, match="unknown fusion"):
        make_fusion("sum", 32, 4, 2)


def test_eaa_gradients_reach_both_encoders():
    cfg = tiny_cfg("eaa")
    model = IdealNeRF(cfg, CROP)
    audio = torch.randn(B, 16, 80)
    expr = torch.randn(B, EXPRESSION_DIM)
    cond = model.encoder(audio, expr)
    assert cond.shape == (B, model.encoder.n_tokens, cfg.token_dim)
    cond.square().mean().backward()
    for name in ("audio", "expression", "fusion"):
        g = sum(p.grad.abs().sum() for p in getattr(model.encoder, name).parameters() if p.grad is not None)
        assert g > 0, name


def test_rays_pass_through_the_canonical_point_they_image():
    """Projecting a canonical point with P gives a pixel; the canonical ray of that pixel passes through it."""
    pose = head_pose(1)
    q = torch.tensor([[0.1, -0.2, 0.15]])
    p = (pose[0, :, :3] @ q.T).T + pose[0, :, 3]
    origins, direction = canonical_rays(p[:, :2], pose)
    z = p[0, 2]
    on_ray = origins[0, 0] + z * direction[0, 0]
    assert torch.allclose(on_ray, q[0], atol=1e-4)


def test_crop_grid_and_box_intersection():
    grid = crop_pixel_grid(CROP, 8)
    assert grid.shape == (64, 2)
    assert torch.allclose(grid[0], torch.tensor([40 + 20.0, 20 + 20.0]))
    pose = head_pose(1)
    lo, hi = torch.tensor([-0.6, -0.8, -0.5]), torch.tensor([0.6, 0.9, 0.8])
    centre = pose[0, :2, 3]
    far_away = torch.tensor([[5.0, 5.0]])
    origins, d = canonical_rays(torch.stack([centre, far_away[0]]), pose)
    near, far, hit = intersect_box(origins, d, lo, hi)
    assert hit[0, 0, 0] == 1 and hit[0, 1, 0] == 0
    assert far[0, 0, 0] > near[0, 0, 0]
    mid = origins[0, 0] + 0.5 * (near[0, 0, 0] + far[0, 0, 0]) * d[0, 0]
    assert ((mid >= lo - 1e-4) & (mid <= hi + 1e-4)).all()


def test_ray_points_are_the_stacked_points_bit_for_bit():
    """The renderer hands the field its points as three coordinate tensors; they are the (B, R*S, 3) points
    o + z d exactly, and the field gives the same features and box test for either form."""
    pose = head_pose(B)
    origins, direction = canonical_rays(crop_pixel_grid(CROP, 8), pose)
    depths = torch.rand(B, 64, 5) * 300 - 150
    old = (origins.unsqueeze(2) + depths.unsqueeze(-1) * direction.unsqueeze(2)).reshape(B, 64 * 5, 3)
    xyz = ray_points(origins, direction, depths)
    assert all(t.shape == (B, 320) for t in xyz)
    assert torch.equal(torch.stack(xyz, dim=-1), old)
    field = TriPlaneField((-0.6, -0.8, -0.5), (0.7, 0.9, 0.8), 16, 4, n_basis=2)
    with torch.no_grad():
        field.basis.normal_()
    coeffs = torch.randn(B, 2)
    for got, want in zip(field(xyz, coeffs), field(old, coeffs)):
        assert torch.equal(got, want)


def test_volume_rendering_matches_cumprod_and_limits():
    density = torch.rand(3, 5, 12) * 20
    deltas = torch.full((3, 5, 12), 0.05)
    w = render_weights(density, deltas)
    alpha = 1 - torch.exp(-density * deltas)
    trans = torch.cumprod(torch.cat([torch.ones(3, 5, 1), 1 - alpha + 1e-7], -1), -1)[..., :-1]
    assert torch.allclose(w, alpha * trans, atol=1e-5)
    assert (w.sum(-1) <= 1 + 1e-5).all()
    assert render_weights(torch.zeros(1, 1, 8), torch.ones(1, 1, 8)).sum() == 0
    opaque = render_weights(torch.full((1, 1, 8), 1e4), torch.ones(1, 1, 8))
    assert abs(float(opaque.sum()) - 1) < 1e-4 and abs(float(opaque[0, 0, 0]) - 1) < 1e-4


def test_triplane_and_ga_shapes_gradients_and_box():
    field = TriPlaneField((-1, -1, -1), (1, 1, 1), 16, 4)
    pts = torch.cat([torch.rand(B, 50, 3) * 1.8 - 0.9, torch.full((B, 5, 3), 1.5)], 1)
    feats, inside = field(pts)
    assert feats.shape == (B, 12, 55) and inside.shape == (B, 55)
    assert (inside[:, :50] == 1).all() and (inside[:, 50:] == 0).all()
    ga = GAModule(12, 32, dim=16, heads=2, hidden=32, feat_channels=8)
    cond = torch.randn(B, 8, 32, requires_grad=True)
    density, rgb, feat = ga(feats, cond)
    assert density.shape == (B, 55) and rgb.shape == (B, 3, 55) and feat.shape == (B, 8, 55)
    assert (density >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
    (density.mean() + rgb.mean() + feat.mean() + field.total_variation()).backward()
    assert field.planes.grad.abs().sum() > 0 and cond.grad.abs().sum() > 0


def test_ga_equals_textbook_attention_and_decoder():
    """The per-frame folding (keys into the query weights, values and the first bias into the first layer) is
    exactly textbook multi-head attention of each point over the tokens, then the MLP on [feature, aggregate]."""
    ga = GAModule(12, 32, dim=16, heads=2, hidden=32, feat_channels=8)
    with torch.no_grad():
        ga.decoder[0].bias.normal_()
    sp, cond = torch.randn(B, 30, 12), torch.randn(B, 8, 32)
    q = ga.query(sp).view(B, 30, 2, 8).transpose(1, 2)
    k = ga.key(cond).view(B, 8, 2, 8).transpose(1, 2)
    v = ga.value(cond).view(B, 8, 2, 8).transpose(1, 2)
    agg = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v).transpose(1, 2).reshape(B, 30, 16)
    out = ga.decoder(torch.cat([sp, agg], dim=-1))
    density, rgb, feat = ga(sp.transpose(1, 2).contiguous(), cond)
    assert torch.allclose(density, torch.nn.functional.softplus(out[..., 0]) * ga.density_scale, atol=1e-4)
    assert torch.allclose(rgb, torch.sigmoid(out[..., 1:4]).transpose(1, 2), atol=1e-5)
    assert torch.allclose(feat, out[..., 4:].transpose(1, 2), atol=1e-5)


@pytest.mark.parametrize("tokens", [8, 6, 5])
def test_exported_token_softmax_is_the_softmax(tokens: int, monkeypatch):
    logits = torch.randn(B, 2, tokens, 50) * 4
    ref = torch.softmax(logits, dim=2)
    assert torch.equal(token_softmax(logits), ref)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)  # the written-out form of the graphs
    torch.testing.assert_close(token_softmax(logits), ref, rtol=0, atol=1e-6)


def test_ga_exported_form_equals_eager(monkeypatch):
    """What the ONNX graphs compute (written-out softmax, 1x1 convolutions) is the eager module's function."""
    ga = GAModule(12, 32, dim=16, heads=2, hidden=32, feat_channels=8)
    with torch.no_grad():
        ga.decoder[0].bias.normal_()
    sp, cond = torch.randn(B, 12, 40), torch.randn(B, 8, 32)
    with torch.no_grad():
        ref = ga(sp, cond)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        got = ga(sp, cond)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-5)


def test_refiner_shapes_gradients_and_bilinear_start():
    ref = Refiner(feat_channels=8, factor=4, channels=8)
    rgb = torch.rand(B, 3, 16, 16, requires_grad=True)
    alpha = torch.rand(B, 1, 16, 16)
    feat = torch.randn(B, 8, 16, 16)
    out_rgb, out_alpha = ref(rgb, alpha, feat)
    assert out_rgb.shape == (B, 3, 64, 64) and out_alpha.shape == (B, 1, 64, 64)
    up = torch.nn.functional.interpolate(rgb, scale_factor=4, mode="bilinear", align_corners=False)
    assert (out_rgb - up).abs().max() < 0.1  # starts close to plain upsampling
    out_rgb.mean().backward()
    assert rgb.grad.abs().sum() > 0


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_refiner_is_bilinear_upsampling_plus_its_residual(factor: int):
    """The bilinear part folded into the last convolution is exactly interpolate(...) + net(...), borders
    included."""
    ref = Refiner(feat_channels=8, factor=factor, channels=8)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.2)
    rgb, alpha, feat = torch.rand(B, 3, 12, 12), torch.rand(B, 1, 12, 12), torch.randn(B, 8, 12, 12)
    x = torch.cat([rgb, alpha], dim=1)
    up = torch.nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    expected = (up + ref.net(torch.cat([x, feat], dim=1))).clamp(0.0, 1.0)
    out_rgb, out_alpha = ref(rgb, alpha, feat)
    assert torch.allclose(torch.cat([out_rgb, out_alpha], dim=1), expected, atol=1e-5)


@pytest.mark.parametrize("fusion", ["eaa", "concat"])
def test_exportable_stages_shapes_and_gradients(fusion):
    cfg = tiny_cfg(fusion)
    model = IdealNeRF(cfg, CROP)
    audio, expr, pose = torch.randn(B, 16, 80), torch.randn(B, EXPRESSION_DIM), head_pose()
    cond = model.encoder(audio, expr)
    for name, tier in cfg.tiers.items():
        rgb, alpha, feat = model.head_renderer(name)(cond, pose)
        r = tier.rays
        assert rgb.shape == (B, 3, r, r) and alpha.shape == (B, 1, r, r) and feat.shape == (B, cfg.feat_channels, r, r)
        assert 0 <= float(alpha.detach().min()) and float(alpha.detach().max()) <= 1
        out_rgb, out_alpha = model.refiner(name)(rgb, alpha, feat)
        assert out_rgb.shape == (B, 3, tier.output, tier.output) and out_alpha.shape == (B, 1, tier.output, tier.output)
    out_rgb, out_alpha = model.render(audio, expr, pose, "coarse")
    (out_rgb.mean() + out_alpha.mean()).backward()
    assert model.ray_renderer.field.planes.grad.abs().sum() > 0
    assert sum(p.grad.abs().sum() for p in model.encoder.parameters() if p.grad is not None) > 0
    # no per-point state leaks between batch entries: rendering one frame alone gives the same image
    with torch.no_grad():
        a1, _ = model.render(audio[:1], expr[:1], pose[:1], "coarse")
        a2, _ = model.render(audio, expr, pose, "coarse")
    assert torch.allclose(a1[0], a2[0], atol=1e-5)


def test_head_moves_with_pose():
    """The head is rendered where the pose puts it: shifting t by 16 px shifts the opacity image."""
    cfg = tiny_cfg()
    model = IdealNeRF(cfg, (0.0, 0.0, 256.0))
    with torch.no_grad():
        model.ray_renderer.ga.decoder[-1].bias[0] = 5.0  # an opaque box
        pose = head_pose(1)
        pose[:, :, :3] *= 0.5
        pose[:, :2, 3] = 128.0
        cond = model.encoder(torch.zeros(1, 16, 80), torch.zeros(1, EXPRESSION_DIM))
        a0 = model.head_renderer("refined")(cond, pose)[1][0, 0]
        pose2 = pose.clone()
        pose2[:, 0, 3] += 32.0  # 4 rays of 8 px
        a1 = model.head_renderer("refined")(cond, pose2)[1][0, 0]
    cols0 = (a0 > 0.5).float().sum(0).nonzero().squeeze(1)
    cols1 = (a1 > 0.5).float().sum(0).nonzero().squeeze(1)
    assert len(cols0) > 4 and int(cols1.min() - cols0.min()) == 4


def test_prosody_predictor_fits_and_predicts():
    rng = np.random.default_rng(0)
    n = 400
    loud = rng.normal(size=n).astype(np.float32)
    mel = rng.normal(scale=0.3, size=(n, PROSODY_WINDOW.length, 80)).astype(np.float32) + loud[:, None, None]
    expr = np.zeros((n, EXPRESSION_DIM), np.float32)
    brows = SLICES["brows"].start
    expr[:, brows] = 0.8 * loud + rng.normal(scale=0.1, size=n)  # louder -> brows up
    pred = ProsodyExpressionPredictor()
    pred.fit(mel[:300], expr[:300])
    out = pred.predict_expression(mel[300:])
    assert out.shape == (100, EXPRESSION_DIM)
    assert np.corrcoef(out[:, brows], expr[300:, brows])[0, 1] > 0.9
    assert (out[:, SLICES["mouth"].indices] == 0).all()  # the mouth is not its business


def test_expression_basis_planes_blend_by_coefficients():
    """features = F0 + sum_k c_k F_k: zero-initialised basis planes change nothing until trained; once set, the
    features move linearly with the coefficients and the basis planes receive gradients scaled by them."""
    field = TriPlaneField((-1, -1, -1), (1, 1, 1), 16, 4, n_basis=2)
    pts = torch.rand(B, 20, 3) * 1.6 - 0.8
    c0 = torch.zeros(B, 2)
    f_plain, _ = field(pts)
    f_zero, _ = field(pts, torch.randn(B, 2))
    assert torch.allclose(f_plain, f_zero)  # zero basis
    with torch.no_grad():
        field.basis.normal_()
    c1 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    c2 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    f0, f1, f2 = field(pts, c0)[0], field(pts, c1)[0], field(pts, c2)[0]
    assert torch.allclose(f2 - f0, 2 * (f1 - f0), atol=1e-5)
    assert torch.allclose(f1[1], f0[1])  # the second frame's coefficients are zero
    # blending the planes per frame and sampling once == sampling every plane per point and blending features
    c = torch.randn(B, 2)
    x = field.normalise(pts)
    grid = torch.stack([x[..., [0, 1]], x[..., [0, 2]], x[..., [1, 2]]], 0).reshape(3, 1, B * 20, 2)
    every = torch.nn.functional.grid_sample(torch.cat([field.planes, field.basis], 1), grid, mode="bilinear",
                                            padding_mode="border", align_corners=False).view(3, 3, 4, B, 20)
    ref = every[:, 0] + (every[:, 1:] * c.t().reshape(1, 2, 1, B, 1)).sum(1)  # (3, 4, B, 20)
    assert torch.allclose(field(pts, c)[0], ref.permute(2, 0, 1, 3).reshape(B, 12, 20), atol=1e-5)
    field.zero_grad()
    field(pts, c1)[0].sum().backward()
    g = field.basis.grad.view(3, 2, 4, 16, 16)
    assert g[:, 0].abs().sum() > 0 and g[:, 1].abs().sum() == 0  # only the basis with a non-zero weight learns


def test_old_model_config_loads_without_basis():
    d = ModelConfig().to_dict()
    del d["n_basis"]
    assert ModelConfig.from_dict(d).n_basis == 0


def test_gather_lookup_equals_grid_sample_including_borders():
    """The exported graphs' lookup is the same function as grid_sample (bilinear, border, align_corners=False),
    also on the border, outside it and exactly on texel centres."""
    from ideal.avatar.model.fields.lookup import gather_lookup, grid_sample_lookup, grid_sample_xy_lookup

    gen = torch.Generator().manual_seed(1)
    planes = torch.randn(3, 5, 16, 16, generator=gen)
    grid = torch.rand(3, 200, 2, generator=gen) * 2.6 - 1.3  # about a quarter of the points beyond the border
    edges = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.9375, 0.0], [1 - 1 / 16, 1.0],
                          [5.0, -7.0], [-1 / 16, 3 / 16]])
    grid[:, :8] = edges
    ref = grid_sample_lookup(planes, grid)
    x, y = grid.unbind(-1)
    assert torch.equal(grid_sample_xy_lookup(planes, x, y), ref)
    assert torch.allclose(gather_lookup(planes, x, y), ref, atol=1e-5)


def test_triplane_field_with_gather_lookup_equals_grid_sample_per_plane_pairs():
    """The field with the exported graphs' lookup is the field with grid_sample, and both are plane i sampled at
    the (x, y), (x, z), (y, z) pairs of the normalised points (with basis planes, points beyond the box)."""
    from ideal.avatar.model.fields.lookup import gather_lookup, grid_sample_lookup

    torch.manual_seed(0)
    field = TriPlaneField((-0.6, -0.8, -0.5), (0.7, 0.9, 0.8), 16, 4, n_basis=2)
    with torch.no_grad():
        field.basis.normal_()
    pts = torch.rand(B, 300, 3) * 2.4 - 1.2  # partly outside the box
    pts[:, :2] = torch.stack([field.box_min, field.box_max])  # exactly on its corners
    coeffs = torch.randn(B, 2)
    feats, inside = field(pts, coeffs)
    x = 2.0 * (pts - field.box_min) / (field.box_max - field.box_min) - 1.0
    assert torch.equal(field.normalise(pts), x)
    assert torch.equal(inside, (x.abs().amax(-1) <= 1.0 + 1e-4).to(pts.dtype))
    grid = torch.stack([x[..., [0, 1]], x[..., [0, 2]], x[..., [1, 2]]], 1).reshape(B * 3, 300, 2)
    ref = grid_sample_lookup(field.frame_planes(coeffs, B), grid).reshape(B, 12, 300)
    assert torch.equal(feats, ref)
    field.lookup = gather_lookup
    assert torch.allclose(field(pts, coeffs)[0], ref, atol=1e-5)
    field.set_lookup("gather")  # what the exporter uses: the planes blended channel-last
    assert field.channels_last
    assert torch.allclose(field(pts, coeffs)[0], ref, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_channel_last_blend_is_the_transposed_channel_first_blend(batch: int):
    """frame_table (the gather lookup's channel-last planes, blended from transposed weights) is frame_planes
    transposed: the same sums of the same products, with and without basis planes."""
    torch.manual_seed(0)
    field = TriPlaneField((-1, -1, -1), (1, 1, 1), 16, 4, n_basis=3)
    with torch.no_grad():
        field.basis.normal_()
    coeffs = torch.randn(batch, 3)
    for c in (coeffs, None):
        table = field.frame_table(c, batch)
        assert table.shape == (batch * 3, 16, 16, 4) and table.is_contiguous()
        torch.testing.assert_close(table, field.frame_planes(c, batch).permute(0, 2, 3, 1), rtol=0, atol=1e-6)
    plain = TriPlaneField((-1, -1, -1), (1, 1, 1), 16, 4)
    assert torch.equal(plain.frame_table(None, batch), plain.frame_planes(None, batch).permute(0, 2, 3, 1))
