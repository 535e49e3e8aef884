"""How stable the head pose is: jitter on the stillest stretch of the clip.

Two figures over the 2 s window where the smoothed head moves least: `*_rms` is the RMS of the pose's
high-frequency part (pose minus a 1 s Savitzky-Golay trend), an upper bound that still holds small real
head motion; `*_noise` is the frame-to-frame noise estimated from second differences (for white noise of
std sigma, x[t+1] - 2 x[t] + x[t-1] has std sqrt(6) sigma; smooth real motion barely contributes at 25 fps).
Rotation is reported in degrees (norm over pitch, yaw, roll), translation in pixels and in millimetres under
the stated assumption that the neutral face height (forehead landmark 10 to chin 152) is 120 mm.
"""

from __future__ import annotations

import numpy as np

from ideal.avatar.prepare.pose import rotation_to_euler
from ideal.avatar.prepare.smoothing import savgol

FACE_HEIGHT_MM = 120.0


def _split(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.linalg.norm(P[:, :, 0], axis=1)
    return s, P[:, :, :3] / s[:, None, None], P[:, :, 3]


def stillest_window(P: np.ndarray, fps: float, window_s: float = 2.0) -> tuple[int, int]:
    """[a, b) frames of the window with the least rotation + translation motion of pose (N, 3, 4)."""
    n = len(P)
    w = min(n, max(3, int(round(window_s * fps))))
    s, R, t = _split(P)
    eul = rotation_to_euler(R)
    speed = (np.linalg.norm(np.diff(eul, axis=0), axis=1)
             + np.linalg.norm(np.diff(t[:, :2], axis=0), axis=1) / s[1:] * 60)
    c = np.concatenate([[0.0], np.cumsum(speed)])
    if w >= n:
        return 0, n
    costs = c[w - 1:] - c[:len(c) - w + 1]
    a = int(np.argmin(costs))
    return a, a + w


def pose_jitter(P: np.ndarray, fps: float, window: tuple[int, int]) -> dict:
    """Jitter of pose (N, 3, 4) on frames [a, b): degrees, pixels and mm (at FACE_HEIGHT_MM)."""
    s, R, t = _split(P)
    eul = rotation_to_euler(R).astype(np.float64)
    hf_e = eul - savgol(eul, 1.0, 2, fps)
    hf_t = t - savgol(t, 1.0, 2, fps)
    a, b = window
    rot_deg = float(np.sqrt((np.linalg.norm(hf_e[a:b], axis=1) ** 2).mean()))
    tr_px = float(np.sqrt((np.linalg.norm(hf_t[a:b, :2], axis=1) ** 2).mean()))
    mm_per_px = FACE_HEIGHT_MM / float(np.median(s[a:b]))
    d2e = np.diff(eul[a:b], 2, axis=0)
    d2t = np.diff(t[a:b, :2], 2, axis=0)
    rot_noise = float(np.sqrt((np.linalg.norm(d2e, axis=1) ** 2).mean() / 6.0)) if len(d2e) else 0.0
    tr_noise = float(np.sqrt((np.linalg.norm(d2t, axis=1) ** 2).mean() / 6.0)) if len(d2t) else 0.0
    return {"rotation_deg_noise": rot_noise, "translation_mm_noise": tr_noise * mm_per_px,
            "rotation_deg_rms": rot_deg, "translation_px_rms": tr_px, "translation_mm_rms": tr_px * mm_per_px,
            "scale_rel_rms": float(np.sqrt(((s[a:b] / savgol(s, 1.0, 2, fps)[a:b] - 1) ** 2).mean()))}


def pose_stats(raw_P: np.ndarray, P: np.ndarray, fps: float) -> dict:
    a, b = stillest_window(P, fps)
    _, R, _ = _split(P)
    eul = rotation_to_euler(R)
    return {
        "still_window_s": [a / fps, b / fps],
        "jitter_raw": pose_jitter(raw_P, fps, (a, b)),
        "jitter_smoothed": pose_jitter(P, fps, (a, b)),
        "face_height_mm_assumed": FACE_HEIGHT_MM,
        "euler_deg_range": {k: [float(eul[:, i].min()), float(eul[:, i].max())]
                            for i, k in enumerate(("pitch", "yaw", "roll"))},
        "face_height_px_median": float(np.median(np.linalg.norm(P[:, :, 0], axis=1))),
    }
