"""Head boxes per frame, the fixed square crop the NeRF renders, and the train/validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ideal.avatar.expression import CHIN, FACE_OVAL, FOREHEAD


@dataclass(frozen=True)
class CropConfig:
    side_margin: float = 0.15  # face heights beside the face oval (ears, hair)
    top_margin: float = 0.40  # face heights above the oval top (hair)
    bottom_margin: float = 0.10  # face heights below the chin
    crop_margin: float = 0.10  # the fixed crop grows the union of head boxes by this fraction per side
    val_fraction: float = 0.10


def head_boxes(landmarks: np.ndarray, width: int, height: int, cfg: CropConfig = CropConfig()) -> np.ndarray:
    """(N, 478, 3) pixel landmarks -> (N, 4) int32 boxes x0, y0, x1, y1 (exclusive), clipped to the image."""
    oval = landmarks[:, list(FACE_OVAL), :2]
    fh = np.linalg.norm(landmarks[:, CHIN, :2] - landmarks[:, FOREHEAD, :2], axis=-1)
    x0 = oval[..., 0].min(axis=1) - cfg.side_margin * fh
    x1 = oval[..., 0].max(axis=1) + cfg.side_margin * fh
    y0 = oval[..., 1].min(axis=1) - cfg.top_margin * fh
    y1 = oval[..., 1].max(axis=1) + cfg.bottom_margin * fh
    boxes = np.stack([np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1)], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.int32)


def fixed_crop(boxes: np.ndarray, width: int, height: int, cfg: CropConfig = CropConfig()) -> dict:
    """A square (x0, y0, x1, y1, size) that holds every head box with margin, inside the image.

    When the union with margin is larger than the image's short side the square is the short side, and
    `contains_all_boxes` says whether the boxes still fit."""
    ux0, uy0 = boxes[:, 0].min(), boxes[:, 1].min()
    ux1, uy1 = boxes[:, 2].max(), boxes[:, 3].max()
    side = max(ux1 - ux0, uy1 - uy0) * (1 + 2 * cfg.crop_margin)
    side = int(min(np.ceil(side / 2) * 2, min(width, height)))
    cx, cy = 0.5 * (ux0 + ux1), 0.5 * (uy0 + uy1)
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    fits = bool(ux0 >= x0 and uy0 >= y0 and ux1 <= x0 + side and uy1 <= y0 + side)
    return {"x0": x0, "y0": y0, "x1": x0 + side, "y1": y0 + side, "size": side, "contains_all_boxes": fits}


def time_split(n_frames: int, val_fraction: float = 0.10) -> dict:
    """Train on the first 90%, validate on the last 10% (by time, so no near-duplicate frames leak)."""
    n_val = max(1, int(np.ceil(n_frames * val_fraction)))
    n_train = n_frames - n_val
    return {"train": [0, n_train], "val": [n_train, n_frames]}
