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
from dataclasses import replace

from ideal.avatar.errors import InputError
from ideal.avatar.occupancy import DEFAULT_OPACITY, DEFAULT_RESOLUTION, OCCUPANCY_FILE, measure, write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("avatar", help="avatar dir to update (`default`: the built-in avatar)")
    parser.add_argument("--opacity", type=float, default=DEFAULT_OPACITY,
                        help="a cell is occupied where a fastest-tier sample there reaches this opacity for some "
                             f"expression (default {DEFAULT_OPACITY}; lower keeps more rays)")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                        help=f"cells per side of the grid (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--off", action="store_true", help="remove the grid: every tier renders every ray")


def run(args: argparse.Namespace) -> int:
    from ideal.avatar.avatar_manifest import load_avatar_manifest, write_avatar_manifest
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.manifest import resolve_avatar

    if not 0.0 < args.opacity < 1.0:
        raise InputError(f"--opacity {args.opacity}: out of range", "use a value in (0, 1), e.g. 0.1")
    if not 8 <= args.resolution <= 256:
        raise InputError(f"--resolution {args.resolution}: out of range", "use 8..256 cells per side")
    args.avatar = resolve_avatar(args.avatar)
    manifest = load_avatar_manifest(args.avatar)
    if not os.access(args.avatar, os.W_OK):
        raise InputError(f"{args.avatar}: not writable", "copy the avatar dir somewhere writable and pass the copy")
    if args.off:
        write_avatar_manifest(args.avatar, replace(manifest, ray_culling=None))
        (args.avatar / OCCUPANCY_FILE).unlink(missing_ok=True)
        print(f"{args.avatar}: ray culling off (every tier renders every ray)")
        return 0
    avatar = load_avatar(args.avatar, culling=False)
    grid, budgets = measure(avatar.model, avatar.expression_track, avatar.pose_track, opacity=args.opacity,
                            resolution=args.resolution)
    culling = write(args.avatar, manifest, grid, budgets, args.opacity)
    write_avatar_manifest(args.avatar, replace(manifest, ray_culling=culling))
    print(f"{args.avatar / OCCUPANCY_FILE}: {grid.mean():.1%} of the head box occupied; rays per frame: "
          + ", ".join(f"{k} {b['rays']}/{manifest.tiers[k].rays ** 2}" for k, b in budgets.items()))
    return 0
