"""Ray culling (avatar.model.components.culling, avatar.occupancy): only rays that can meet the head are
rendered, and the picture is the one every ray gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ideal.avatar.model.components.culling import RayCulling, pack_rays, unpack_rays
from ideal.avatar.model.components.rays import canonical_rays, crop_pixel_grid, intersect_box


def test_pack_rays_keeps_occupied_rays_in_order_and_drops_the_overflow():
    scores = torch.tensor([[0.0, 2.0, 0.0, 1.0, 5.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    packed = pack_rays(scores, 3)
    assert packed[0].tolist() == [1, 3, 4]
    assert packed[1].tolist() == [0, 1, 2]  # ray 3 is past the budget
    sparse = pack_rays(torch.tensor([[0.0, 0.0, 3.0, 0.0]]), 3)
    assert sparse[0].tolist() == [2, 0, 0]  # unused slots re-render ray 0


def test_unpack_rays_scatters_back_and_leaves_the_rest_empty():
    index = torch.tensor([[4, 1]])
    values = torch.tensor([[[10.0, 20.0], [1.0, 2.0]]])  # (B, V=2, K=2)
    full = unpack_rays(values, index, 6)
    assert full.shape == (1, 2, 6)
    assert full[0, 0].tolist() == [0, 20, 0, 0, 10, 0] and full[0, 1].tolist() == [0, 2, 0, 0, 1, 0]


def _pose(scale: float, angle: float, tx: float, ty: float) -> torch.Tensor:
    c, s = np.cos(angle), np.sin(angle)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float32)  # yaw
    return torch.cat([scale * rot, torch.tensor([[tx], [ty], [0.0]])], dim=1).unsqueeze(0)


@pytest.mark.parametrize("angle", [0.0, 0.35, -0.6])
def test_ray_mask_marks_every_ray_that_crosses_an_occupied_cell(angle: float):
    """Exact check against a slab test: every ray through an occupied cell is marked, and not many more."""
    box_min, box_max = torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    grid = torch.zeros(16, 16, 16)
    grid[3:6, 9:11, 4:12] = 1  # a bar
    grid[12, 2, 7] = 1  # and one lone cell
    culling = RayCulling(grid, box_min, box_max)
    crop, rays = (0.0, 0.0, 256.0), 64
    pose = _pose(100.0, angle, 128.0, 120.0)
    footprint = culling.footprint(pose, crop, rays)
    mask = culling.ray_mask(pose, crop, rays, footprint)[0] > 0
    origins, direction = canonical_rays(crop_pixel_grid(crop, rays), pose)
    crossed = torch.zeros(rays * rays, dtype=torch.bool)
    cell = (box_max - box_min) / 16
    for x, y, z in torch.nonzero(grid).tolist():
        lo = box_min + cell * torch.tensor([x, y, z], dtype=torch.float32)
        _, _, hit = intersect_box(origins, direction, lo, lo + cell)
        crossed |= hit[0, :, 0] > 0
    assert crossed.any()
    assert not (crossed & ~mask).any(), f"{int((crossed & ~mask).sum())} crossing rays left out"
    assert mask.sum() <= 3 * crossed.sum()


def test_ray_mask_projects_u_and_v_as_the_pairwise_projection_did():
    """ray_mask projects the cells' u and v as two rows; the marks are those of the (B, N, 2) projection."""
    gen = torch.Generator().manual_seed(0)
    culling = RayCulling((torch.rand(16, 16, 16, generator=gen) > 0.7).float(), torch.tensor([-1.0, -1.2, -0.9]),
                         torch.tensor([1.1, 1.0, 1.3]))
    crop, rays = (10.0, -5.0, 256.0), 64
    pose = torch.cat([_pose(90.0 + 10 * k, 0.3 * k - 0.6, 120.0 + k, 125.0 - k) for k in range(5)])
    pose[:, :, 3] += torch.rand(5, 3, generator=gen)
    footprint = culling.footprint(pose, crop, rays)
    uv = torch.einsum("bij,nj->bni", pose[:, :2, :3], culling.centres) + pose[:, None, :2, 3]
    step = crop[2] / rays
    col, row = ((uv[..., 0] - crop[0]) / step).floor(), ((uv[..., 1] - crop[1]) / step).floor()
    inside = (col >= -footprint) & (col < rays + footprint) & (row >= -footprint) & (row < rays + footprint)
    index = torch.where(inside, (row.clamp(0, rays - 1) * rays + col.clamp(0, rays - 1)).long(), rays * rays)
    marks = torch.zeros(5, rays * rays + 1).scatter(1, index, 1.0)[:, :rays * rays]
    ref = torch.nn.functional.max_pool2d(marks.view(5, 1, rays, rays), 2 * footprint + 1, stride=1,
                                         padding=footprint).view(5, -1)
    assert torch.equal(culling.ray_mask(pose, crop, rays, footprint), ref)


def test_culled_render_equals_the_full_render(tiny_avatar: Path):
    from ideal.avatar.loading import load_avatar

    manifest = json.loads((tiny_avatar / "avatar.json").read_text())
    entry = manifest["ray_culling"]  # ideal train measured it
    assert (tiny_avatar / entry["file"]).exists()
    full, culled = load_avatar(tiny_avatar, culling=False), load_avatar(tiny_avatar)
    assert culled.model.heads["coarse"].culling is not None and full.model.heads["coarse"].culling is None
    rng = np.random.default_rng(0)
    for i in (3, 40, 150):
        audio = rng.normal(size=(1, full.window.length, 80)).astype(np.float32)
        a = full.backend.render(audio, full.expression_track[[i]], full.pose_track[[i]], "coarse")
        b = culled.backend.render(audio, full.expression_track[[i]], full.pose_track[[i]], "coarse")
        fa = full.composite(a.rgb[0], a.alpha[0], i).astype(np.float32)
        fb = culled.composite(b.rgb[0], b.alpha[0], i).astype(np.float32)
        mse = float(((fa - fb) ** 2).mean())
        assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-9)) > 50.0
    budget, of = entry["tiers"]["coarse"]["rays"], entry["tiers"]["coarse"]["of"]
    assert 0 < budget <= of


def test_occupancy_command_round_trip(tiny_avatar: Path, tmp_path: Path, capsys):
    from ideal.avatar.errors import AvatarError
    from ideal.avatar.loading import load_avatar
    from ideal.cli import main

    av = tmp_path / "av"
    shutil.copytree(tiny_avatar, av)
    assert main(["-q", "occupancy", str(av), "--off"]) == 0
    assert "ray_culling" not in json.loads((av / "avatar.json").read_text())
    assert not (av / "occupancy.npz").exists()
    assert load_avatar(av).model.heads["fast"].culling is None
    assert main(["-q", "occupancy", str(av), "--opacity", "0.05", "--resolution", "32"]) == 0
    entry = json.loads((av / "avatar.json").read_text())["ray_culling"]
    assert entry["opacity"] == 0.05 and entry["resolution"] == 32
    head = load_avatar(av).model.heads["fast"]
    assert head.culling is not None and head.budget == entry["tiers"]["fast"]["rays"]
    capsys.readouterr()
    assert main(["occupancy", str(av), "--opacity", "1.5"]) != 0
    assert "--opacity" in capsys.readouterr().err
    (av / "occupancy.npz").write_bytes(b"not a zip")
    with pytest.raises(AvatarError, match="occupancy"):
        load_avatar(av)
