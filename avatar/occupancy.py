"""`ideal occupancy AVATAR`: measure the avatar's occupancy grid, so its tiers render only the rays that can meet
the head (avatar.model.components.culling). `ideal train` does this; use it for avatars trained before, to
change the threshold, or with --off to render every ray again.

The grid lives in the avatar dir as `occupancy.npz`; avatar.json `ray_culling` records its threshold, checksum
and each tier's ray budget and footprint, which fixes the shapes of the exported graphs (re-run `ideal export`
after changing it: the export fingerprint covers avatar.json).
"""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

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


def write(directory: Path, manifest: dict[str, Any], grid: np.ndarray, budgets: dict[str, dict[str, int]],
          opacity: float) -> dict[str, Any]:
    """Write occupancy.npz into the avatar dir and return the manifest's `ray_culling` entry (not written)."""
    from ideal.avatar.manifest import sha256_file

    path = directory / OCCUPANCY_FILE
    tmp = directory / (OCCUPANCY_FILE + ".partial.npz")
    np.savez_compressed(tmp, grid=np.packbits(grid.astype(bool)), resolution=np.int32(grid.shape[0]))
    os.replace(tmp, path)
    rays = {name: manifest["tiers"][name]["rays"] ** 2 for name in budgets if name in manifest.get("tiers", {})}
    return {"file": OCCUPANCY_FILE, "sha256": sha256_file(path), "opacity": opacity,
            "resolution": int(grid.shape[0]), "occupied_fraction": round(float(grid.mean()), 4),
            "tiers": {name: {**b, "of": rays.get(name)} for name, b in budgets.items()}}


def load(directory: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, dict[str, dict[str, int]]] | None:
    """(grid (D, D, D) uint8, per-tier budgets) when avatar.json has `ray_culling`, else None."""
    entry = manifest.get("ray_culling")
    if not entry:
        return None
    path = directory / str(entry.get("file", OCCUPANCY_FILE))
    try:
        with np.load(path, allow_pickle=False) as z:
            d = int(z["resolution"])
            grid = np.unpackbits(z["grid"])[:d ** 3].reshape(d, d, d)
        budgets = {name: {"rays": int(t["rays"]), "footprint": int(t["footprint"])}
                   for name, t in entry["tiers"].items()}
    except (OSError, KeyError, TypeError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AvatarError(f"{path}: unreadable occupancy grid ({exc})",
                          f"re-run `ideal occupancy {directory}` (or `--off` to render every ray)") from exc
    return grid, budgets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("avatar", help="avatar dir to update (`default`: the built-in avatar)")
    parser.add_argument("--opacity", type=float, default=DEFAULT_OPACITY,
                        help="a cell is occupied where a fastest-tier sample there reaches this opacity for some "
                             f"expression (default {DEFAULT_OPACITY}; lower keeps more rays)")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                        help=f"cells per side of the grid (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--off", action="store_true", help="remove the grid: every tier renders every ray")


def run(args: argparse.Namespace) -> int:
    from ideal.avatar.errors import InputError
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.manifest import load_avatar_manifest, resolve_avatar, rewrite_avatar_manifest

    if not 0.0 < args.opacity < 1.0:
        raise InputError(f"--opacity {args.opacity}: out of range", "use a value in (0, 1), e.g. 0.1")
    if not 8 <= args.resolution <= 256:
        raise InputError(f"--resolution {args.resolution}: out of range", "use 8..256 cells per side")
    args.avatar = resolve_avatar(args.avatar)
    manifest = load_avatar_manifest(args.avatar)
    if not os.access(args.avatar, os.W_OK):
        raise InputError(f"{args.avatar}: not writable", "copy the avatar dir somewhere writable and pass the copy")
    if args.off:
        manifest.pop("ray_culling", None)
        rewrite_avatar_manifest(args.avatar, manifest)
        (args.avatar / OCCUPANCY_FILE).unlink(missing_ok=True)
        print(f"{args.avatar}: ray culling off (every tier renders every ray)")
        return 0
    avatar = load_avatar(args.avatar, culling=False)
    grid, budgets = measure(avatar.model, avatar.expression_track, avatar.pose_track, opacity=args.opacity,
                            resolution=args.resolution)
    manifest["ray_culling"] = write(args.avatar, manifest, grid, budgets, args.opacity)
    rewrite_avatar_manifest(args.avatar, manifest)
    print(f"{args.avatar / OCCUPANCY_FILE}: {grid.mean():.1%} of the head box occupied; rays per frame: "
          + ", ".join(f"{k} {b['rays']}/{manifest['tiers'][k]['rays'] ** 2}" for k, b in budgets.items()))
    return 0
