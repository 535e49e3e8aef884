"""Zero-phase temporal smoothing (offline, so no lag): Savitzky-Golay fits a local polynomial around each
frame from both sides, removing tracker jitter while keeping the timing and height of fast peaks (lip
closures, blinks) far better than a moving average or a causal filter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ideal.avatar.expression import LIPS, R_IRIS, L_IRIS

# Eyelid contours (upper and lower lids of both eyes) and irises: blinks and saccades are fast.
EYELIDS: tuple[int, ...] = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
)
IRISES: tuple[int, ...] = tuple(range(R_IRIS, R_IRIS + 5)) + tuple(range(L_IRIS, L_IRIS + 5))
FAST_POINTS: tuple[int, ...] = tuple(sorted(set(LIPS) | set(EYELIDS) | set(IRISES) | {152, 17, 0, 13, 14}))


@dataclass(frozen=True)
class SmoothingConfig:
    """Window lengths in seconds (converted to odd frame counts at the clip's fps) and polynomial orders."""

    pose_window_s: float = 0.36
    pose_order: int = 2
    face_window_s: float = 0.28
    face_order: int = 2
    fast_window_s: float = 0.2  # lips, lids, irises: a cubic over 5 frames at 25 fps keeps closures sharp
    fast_order: int = 3

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"method": "savitzky_golay_zero_phase", **asdict(self)}


def _window(seconds: float, fps: float, order: int) -> int:
    w = int(round(seconds * fps)) | 1
    return max(w, order + 2 | 1)


def savgol(x: np.ndarray, window_s: float, order: int, fps: float) -> np.ndarray:
    """Smooth (N, ...) along axis 0; returns x unchanged when the clip is shorter than the window."""
    from scipy.signal import savgol_filter

    w = _window(window_s, fps, order)
    if len(x) < w or w <= order:
        return np.asarray(x, dtype=np.float32)
    return savgol_filter(x, w, order, axis=0, mode="interp").astype(np.float32)


def smooth_landmarks(lm: np.ndarray, fps: float, cfg: SmoothingConfig = SmoothingConfig()) -> np.ndarray:
    """(N, 478, 3) -> smoothed copy: lighter on lips, lids and irises than on the rest of the face."""
    out = savgol(lm, cfg.face_window_s, cfg.face_order, fps)
    fast = list(FAST_POINTS)
    out[:, fast] = savgol(lm[:, fast], cfg.fast_window_s, cfg.fast_order, fps)
    return out
