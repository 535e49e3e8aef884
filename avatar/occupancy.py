"""The occupancy grid of an avatar: which cells of the head box can ever be opaque, so its tiers render only
the rays that can meet the head (avatar.model.components.culling). `ideal train` measures it;
`ideal occupancy` (avatar.occupancy_cli) re-measures or removes it.

The grid lives in the avatar dir as `occupancy.npz`; avatar.json `ray_culling` records its threshold, checksum
and each tier's ray budget and footprint, which fixes the shapes of the exported graphs (re-run `ideal export`
after changing it: the export fingerprint covers avatar.json).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ideal.avatar.avatar_manifest import AvatarManifest, RayBudget, RayCulling
from ideal.avatar.errors import AvatarError

OCCUPANCY_FILE = "occupancy.npz"
DEFAULT_OPACITY = 0.1
DEFAULT_RESOLUTION = 64


def measure(model, expression_track: np.ndarray, pose_track: np.ndarray, audio_windows: np.ndarray | None = None,
            opacity: float = DEFAULT_OPACITY, resolution: int = DEFAULT_RESOLUTION,
            show_progress: bool = True) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """The occupancy grid (D, D, D) uint8 of `model` (an IdealNeRF) over the avatar's expression range, and each
    tier's {"rays", "footprint"} for its pose track."""
    import torch

    from ideal.avatar.model.components.culling import (RayCulling, estimate_occupancy, occupancy_conditions,
                                                  ray_budgets)

    rr = model.ray_renderer
    cond = occupancy_conditions(model.encoder, expression_track, audio_windows)
    grid = estimate_occupancy(rr, cond, opacity, resolution=resolution, show_progress=show_progress)
    culling = RayCulling(grid, rr.field.box_min, rr.field.box_max)
    tiers = {name: head.tier.rays for name, head in model.heads.items()}
    budgets = ray_budgets(culling, model.crop, tiers, torch.from_numpy(pose_track).float())
    return grid.numpy().astype(np.uint8), budgets


def write(directory: Path, manifest: AvatarManifest, grid: np.ndarray, budgets: dict[str, dict[str, int]],
          opacity: float) -> RayCulling:
    """Write occupancy.npz into the avatar dir and return the manifest's `ray_culling` entry (not written)."""
    from ideal.avatar.manifest import sha256_file

    path = directory / OCCUPANCY_FILE
    tmp = directory / (OCCUPANCY_FILE + ".partial.npz")
    np.savez_compressed(tmp, grid=np.packbits(grid.astype(bool)), resolution=np.int32(grid.shape[0]))
    os.replace(tmp, path)
    rays = {name: manifest.tiers[name].rays ** 2 for name in budgets if name in manifest.tiers}
    return RayCulling(file=OCCUPANCY_FILE, sha256=sha256_file(path), opacity=opacity, resolution=int(grid.shape[0]),
                      occupied_fraction=round(float(grid.mean()), 4),
                      tiers={name: RayBudget(**b, of=rays.get(name)) for name, b in budgets.items()})


def load(directory: Path, manifest: AvatarManifest) -> tuple[np.ndarray, dict[str, dict[str, int]]] | None:
    """(grid (D, D, D) uint8, per-tier budgets) when avatar.json has `ray_culling`, else None."""
    entry = manifest.ray_culling
    if entry is None:
        return None
    path = directory / entry.file
    try:
        with np.load(path, allow_pickle=False) as z:
            d = int(z["resolution"])
            grid = np.unpackbits(z["grid"])[:d ** 3].reshape(d, d, d)
        budgets = {name: {"rays": t.rays, "footprint": t.footprint} for name, t in entry.tiers.items()}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AvatarError(f"{path}: unreadable occupancy grid ({exc})",
                          f"re-run `ideal occupancy {directory}` (or `--off` to render every ray)") from exc
    return grid, budgets
