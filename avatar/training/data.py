"""The prepared dataset, loaded into memory at the model's crop resolution.

Everything the trainer needs per frame, cropped to the manifest's fixed square crop and resized to the
output size S of the tiers: target frame, head mask, base (torso over the background plate: what the head
is composited onto), plus the conditioning (audio window, expression, pose) and a mouth-centre position for
ray weighting. Any missing or unreadable file is an InputError naming it.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ideal.avatar.progress import progress_bar

from ideal.avatar.audio.features import AudioWindow, MelConfig, windows_for_frames
from ideal.avatar.compose import base_image
from ideal.avatar.errors import InputError
from ideal.avatar.expression import EXPRESSION_DIM, L_EYE_INNER, L_EYE_OUTER, LIPS, R_EYE_INNER, R_EYE_OUTER
from ideal.avatar.dataset_manifest import DatasetManifest, Split, load_dataset_manifest
from ideal.avatar.prepare.segment import HEAD  # the mask labels, defined where the masks are written

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    manifest: DatasetManifest
    directory: Path
    crop: tuple[float, float, float]  # x0, y0, size in full-frame pixels
    size: int  # S: crop resolution the arrays are stored at
    frames: np.ndarray  # (N, S, S, 3) uint8 target crops
    head: np.ndarray  # (N, S, S) uint8 1 = head (mask label 2)
    base: np.ndarray  # (N, S, S, 3) uint8 torso over background plate, head removed
    audio: np.ndarray  # (N, W, n_mels) float32 audio windows
    expression: np.ndarray  # (N, 20) float32
    pose: np.ndarray  # (N, 3, 4) float32
    head_boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 full-frame pixels (prepare's per-frame head box)
    mouth: np.ndarray  # (N, 3) float32 mouth centre x, y in crop pixels (S units) and radius
    eyes: np.ndarray  # (N, 2, 3) float32 right and left eye centre x, y in crop pixels and radius
    train_idx: np.ndarray
    val_idx: np.ndarray
    neutral: np.ndarray  # (478, 3) canonical neutral face
    mel: np.ndarray  # (M, n_mels)
    window: AudioWindow
    mel_config: MelConfig

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def head_dilated_cells(self, cell: int) -> np.ndarray:
        """(N, S/cell, S/cell) float32 head coverage per cell, dilated by ~S/32 px so the silhouette's
        surroundings count as head (the opacity edge is where most of the error is)."""
        import cv2

        k = max(3, self.size // 32) | 1
        kernel = np.ones((k, k), np.uint8)
        g = self.size // cell
        return np.stack([cv2.resize(cv2.dilate(m, kernel).astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
                         for m in self.head])


def _load_npy(path: Path, key: str | None = None) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: missing from the dataset", "re-run `ideal prepare`")
    try:
        if key is None:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: unreadable or corrupt ({type(exc).__name__}: {exc})",
                         "re-run `ideal prepare`") from exc


def _read_image(path: Path, flags: int) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), flags) if path.exists() else None
    if img is None:
        raise InputError(f"{path}: missing or not a readable image", "re-run `ideal prepare`")
    return img


def _recompute_mel(path: Path, cfg: MelConfig) -> np.ndarray:
    from ideal.avatar.audio.features import compute_features
    from ideal.avatar.audio.io import load_audio

    if not path.exists():
        raise InputError(f"{path}: missing from the dataset", "re-run `ideal prepare`")
    try:
        audio = load_audio(path)
    except Exception as exc:
        raise InputError(f"{path}: unreadable audio ({exc})", "re-run `ideal prepare`") from exc
    return compute_features(audio, cfg)


def cut_crop(img: np.ndarray, crop: tuple[float, float, float], size: int,
             interpolation: int | None = None) -> np.ndarray:
    """The crop (x0, y0, side) of a full frame, resized to size x size (edge pixels replicated outside)."""
    import cv2

    x0, y0, side = (int(round(v)) for v in crop)
    h, w = img.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    patch = img[y0:y0 + side, x0:x0 + side]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def _split(split: Split, n: int) -> tuple[np.ndarray, np.ndarray]:
    train, val = np.arange(*split.train), np.arange(*split.val)
    if len(train) == 0:
        raise InputError(f"dataset has {n} frames: too few to train", "prepare a longer clip (10 s or more)")
    return train, val


def load_training_data(directory: str | Path, size: int, window: AudioWindow, mel_config: MelConfig = MelConfig(),
                       max_frames: int | None = None) -> TrainingData:
    """Validate and load a dataset dir into memory at crop resolution `size`."""
    import cv2

    directory = Path(directory)
    manifest = load_dataset_manifest(directory)
    crop = manifest.crop.box
    pose = _load_npy(directory / "pose.npz", "pose").astype(np.float32)
    expression = _load_npy(directory / "expression.npy").astype(np.float32)
    mel = _load_npy(directory / "mel.npy").astype(np.float32)
    landmarks = _load_npy(directory / "landmarks.npy").astype(np.float32)
    neutral = _load_npy(directory / "neutral.npy").astype(np.float32)
    head_boxes = _load_npy(directory / "head_boxes.npy").astype(np.float32)
    n = manifest.n_frames
    for name, arr, shape in (("pose.npz", pose, (n, 3, 4)), ("expression.npy", expression, (n, EXPRESSION_DIM)),
                             ("landmarks.npy", landmarks[..., :2], (n, 478, 2)), ("neutral.npy", neutral, (478, 3)),
                             ("head_boxes.npy", head_boxes, (n, 4))):
        if arr.shape != shape:
            raise InputError(f"{directory / name}: shape {arr.shape}, expected {shape} for {n} frames",
                             "the dataset is inconsistent; re-run `ideal prepare`")
    if mel.ndim != 2 or mel.shape[1] != mel_config.n_mels:
        raise InputError(f"{directory / 'mel.npy'}: shape {mel.shape}, expected (M, {mel_config.n_mels})",
                         "re-run `ideal prepare`")
    if not np.isfinite(pose).all() or not np.isfinite(expression).all():
        raise InputError(f"{directory}: non-finite values in pose.npz or expression.npy", "re-run `ideal prepare`")
    if max_frames is not None:
        n = min(n, max_frames)
    fps = manifest.fps
    background = _read_image(directory / "background.png", cv2.IMREAD_COLOR)[:, :, ::-1]
    frames = np.empty((n, size, size, 3), np.uint8)
    head = np.empty((n, size, size), np.uint8)
    base = np.empty((n, size, size, 3), np.uint8)
    for i in progress_bar(range(n), desc="loading dataset", unit="frame", leave=False):
        rgb = _read_image(directory / "frames" / f"{i:06d}.jpg", cv2.IMREAD_COLOR)[:, :, ::-1]
        labels = _read_image(directory / "masks" / f"{i:06d}.png", cv2.IMREAD_UNCHANGED)
        if labels.shape[:2] != rgb.shape[:2]:
            raise InputError(f"{directory / 'masks' / f'{i:06d}.png'}: size {labels.shape[:2]} differs from its frame "
                             f"{rgb.shape[:2]}", "re-run `ideal prepare`")
        frames[i] = cut_crop(np.ascontiguousarray(rgb), crop, size)
        lab = cut_crop(labels, crop, size, cv2.INTER_NEAREST)
        head[i] = lab == HEAD
        # the same base the compositor uses at run time (torso + neck band over the background plate)
        full_base, _ = base_image(rgb, labels, background)
        base[i] = cut_crop(np.ascontiguousarray(full_base), crop, size)
    x0, y0, side = crop
    lips = landmarks[:n, list(LIPS), :2]
    centre = (lips.mean(axis=1) - np.array([x0, y0])) * size / side
    radius = (lips.max(axis=1) - lips.min(axis=1)).max(axis=1) * size / side * 0.75
    mouth = np.concatenate([centre, radius[:, None]], axis=1).astype(np.float32)
    eyes = np.stack([_eye_blob(landmarks[:n], outer, inner, crop, size)
                     for outer, inner in ((R_EYE_OUTER, R_EYE_INNER), (L_EYE_OUTER, L_EYE_INNER))], axis=1)
    # The dataset's mel.npy may predate a change of the feature code: recompute from audio.wav with this
    # version's MelConfig, which is what the streamer computes live and what avatar.json records.
    mel = _recompute_mel(directory / "audio.wav", mel_config)
    audio = windows_for_frames(mel, n, fps, window, mel_config)
    train, val = _split(manifest.split, manifest.n_frames)
    train, val = train[train < n], val[val < n]
    if len(val) == 0:
        val = train[-max(1, len(train) // 10):]
    return TrainingData(manifest=manifest, directory=directory, crop=crop, size=size, frames=frames, head=head,
                        base=base, head_boxes=head_boxes[:n], audio=audio, expression=expression[:n], pose=pose[:n],
                        mouth=mouth, eyes=eyes,
                        train_idx=train, val_idx=val, neutral=neutral, mel=mel, window=window, mel_config=mel_config)


def _eye_blob(landmarks: np.ndarray, outer: int, inner: int, crop: tuple[float, float, float],
              size: int) -> np.ndarray:
    """(N, 3) eye centre x, y in crop pixels and a radius that covers the lids (0.75 of the corner distance)."""
    x0, y0, side = crop
    a, b = landmarks[:, outer, :2], landmarks[:, inner, :2]
    centre = (0.5 * (a + b) - np.array([x0, y0])) * size / side
    radius = np.linalg.norm(a - b, axis=1) * size / side * 0.75
    return np.concatenate([centre, radius[:, None]], axis=1).astype(np.float32)


def head_box_from_neutral(neutral: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Canonical box around the head: the neutral landmarks grown for hair (above), ears (sides), the back of
    the head (away from the camera) and the jaw's travel (below)."""
    lo = neutral.min(axis=0) - np.array([0.25, 0.45, 0.25])
    hi = neutral.max(axis=0) + np.array([0.25, 0.25, 0.5])
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)
