"""Rebuild an avatar's base plate (base_plate.npz) from the dataset it was trained on, with this version's
`avatar.compose.base_image` (e.g. after the neck extension that removed the line of background under the chin),
without retraining: the head model is unchanged, only what it is composited over.

    python scripts/rebuild_base_plate.py AVATAR --dataset DATASET
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("avatar", type=Path, help="avatar dir written by `ideal train`")
    ap.add_argument("--dataset", type=Path, required=True, help="the dataset dir it was trained on")
    args = ap.parse_args()
    import cv2

    from ideal.avatar.compose import BasePlate

    old = BasePlate.load(args.avatar / "base_plate.npz")
    n = old.n_frames
    background = cv2.imread(str(args.dataset / "background.png"), cv2.IMREAD_COLOR)
    if background is None or background.shape[:2] != old.size:
        raise SystemExit(f"{args.dataset}: no background.png of size {old.size}; is this the avatar's dataset?")

    def frames():
        for i in range(n):
            rgb = cv2.imread(str(args.dataset / "frames" / f"{i:06d}.jpg"), cv2.IMREAD_COLOR)
            labels = cv2.imread(str(args.dataset / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            if rgb is None or labels is None:
                raise SystemExit(f"{args.dataset}: frame {i} or its mask is missing")
            yield np.ascontiguousarray(rgb[:, :, ::-1]), labels

    plate = BasePlate.build(np.ascontiguousarray(background[:, :, ::-1]), frames(), n)
    plate.save(args.avatar / "base_plate.npz")
    print(f"{args.avatar / 'base_plate.npz'}: {n} frames, torso box {plate.torso_box}")


if __name__ == "__main__":
    main()
