"""The held-out set of a dataset, as every method in one evaluation run sees it.

The split is the dataset manifest's (`split.val`, by default the last 10% of frames, one contiguous block so
LMDV has consecutive pairs); frames are cut to the avatar's fixed square crop at the render size S exactly as
the trainer cuts them (`avatar.training.data.load_training_data`), so "head crop" means the same pixels in
training and evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ideal.avatar.audio.features import AudioWindow, MelConfig
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    dataset: Path
    fps: float
    crop: tuple[float, float, float]  # x0, y0, side in full-frame pixels
    size: int  # S
    frame_size: tuple[int, int]  # full frame (width, height)
    index: np.ndarray  # (V,) held-out frame numbers (ascending)
    train_index: np.ndarray  # (T,)
    real: np.ndarray  # (V, S, S, 3) uint8 real head crops
    base: np.ndarray  # (V, S, S, 3) uint8 torso over background plate: what a rendered head goes onto
    audio: np.ndarray  # (V, W, n_mels) the avatar's audio windows
    expression: np.ndarray  # (V, 20) tracked expressions (reconstruction mode drives with these)
    pose: np.ndarray  # (V, 3, 4) tracked poses
    neutral: np.ndarray  # (478, 3)
    baseline_source: np.ndarray  # (V,) training frame number nearest by audio window
    baseline_crops: np.ndarray  # (V, S, S, 3) uint8 those training frames' crops
    audio_16k: np.ndarray  # the dataset's whole audio track (the mouth model reads it)
    n_frames: int
    head_box: np.ndarray  # (V, 4) int: each real frame's head box (x0, y0, x1, y1) in render-crop pixels

    def full_frame(self, i: int) -> np.ndarray:
        """Full RGB uint8 frame number `i` of the dataset."""
        import cv2

        path = self.dataset / "frames" / f"{i:06d}.jpg"
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"{path}: missing or unreadable", "re-run `ideal prepare`")
        return np.ascontiguousarray(img[:, :, ::-1])


def load_heldout(dataset: str | Path, size: int, window: AudioWindow, mel_config: MelConfig = MelConfig(),
                 max_frames: int | None = None) -> HeldOut:
    """Load the held-out frames (at most `max_frames` of them, from the start of the block) and pick the
    baseline's training frames."""
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.evaluation.baseline import nearest_by_audio
    from ideal.avatar.training.data import load_training_data

    dataset = Path(dataset)
    data = load_training_data(dataset, size, window, mel_config)
    val = np.asarray(data.val_idx)
    if max_frames is not None:
        val = val[:max_frames]
    if len(val) < 2:
        raise InputError(f"{dataset}: only {len(val)} held-out frames", "prepare a longer clip (10 s or more)")
    train = np.asarray(data.train_idx)
    picks = train[nearest_by_audio(data.audio[train], data.audio[val])]
    audio_16k = load_audio(dataset / "audio.wav")
    from ideal.avatar.compose import box_in_render_crop

    boxes = np.load(dataset / "head_boxes.npy")
    if boxes.shape != (data.n_frames, 4):
        raise InputError(f"{dataset / 'head_boxes.npy'}: shape {boxes.shape}, expected ({data.n_frames}, 4)",
                         "re-run `ideal prepare`")
    head_box = np.array([box_in_render_crop(boxes[i], data.crop, size) for i in val], dtype=np.int64)
    import cv2

    first = cv2.imread(str(dataset / "frames" / f"{int(val[0]):06d}.jpg"))
    if first is None:
        raise InputError(f"{dataset / 'frames'}: held-out frame {int(val[0])} is missing", "re-run `ideal prepare`")
    return HeldOut(
        dataset=dataset, fps=data.manifest.fps, crop=data.crop, size=size,
        frame_size=(first.shape[1], first.shape[0]), index=val, train_index=train,
        real=data.frames[val], base=data.base[val], audio=data.audio[val], expression=data.expression[val],
        pose=data.pose[val], neutral=data.neutral, baseline_source=picks, baseline_crops=data.frames[picks],
        audio_16k=audio_16k, n_frames=data.n_frames, head_box=head_box,
    )


def paste_crop(full: np.ndarray, crop_img: np.ndarray, crop: tuple[float, float, float]) -> np.ndarray:
    """A copy of the full frame with the square crop region replaced by `crop_img` (S, S, 3) resized to it."""
    import cv2

    x0, y0, side = (int(round(v)) for v in crop)
    h, w = full.shape[:2]
    patch = cv2.resize(crop_img, (side, side), interpolation=cv2.INTER_LINEAR if side > crop_img.shape[0]
                       else cv2.INTER_AREA)
    out = full.copy()
    # the crop may reach past the frame edge (the trainer pads by replication there): paste the inside part
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    out[ay0:ay1, ax0:ax1] = patch[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    return out
