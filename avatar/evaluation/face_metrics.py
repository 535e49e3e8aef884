"""Face metrics from the same face tracker run on rendered and real frames: LMD, LMDV, AU error, Pose-D.

All of them compare tracker output on a rendered frame with tracker output on the real frame it should match:
- LMD: mean Euclidean distance (image x, y, in pixels) between corresponding landmarks, on the whole face (the
  468 mesh points, irises excluded) and on the mouth (`avatar.expression.LIPS`, 40 points). Pixels are at the
  source resolution times `scale` (the CLI scales to a 512 px frame so clips of different sizes compare).
- LMDV: the same distance between landmark velocities (frame t+1 minus frame t) over consecutive frame pairs.
- AU error: mean absolute difference of landmark-based action-unit proxies (`AU_PROXIES`), each a signed
  combination of `avatar.expression` fields, so the unit is the expression vector's: a tenth of the person's
  neutral face height (FEATURE_SCALE = 10). OpenFace (which the paper used) is not available offline; these
  proxies measure the same facial motions geometrically.
- Pose-D: geodesic angle in degrees between the tracker's head rotations on the two frames.
- mouth_open_r: Pearson correlation over time of the tracked mouth opening (`avatar.expression.mouth_opening`)
  on the two sequences: the lip-sync figure that ignores a constant offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ideal.avatar.expression import FIELDS, LIPS, mouth_opening

FACE_POINTS = np.arange(468)  # the mesh without the 10 iris points (irises are in the eyes AU already)
MOUTH_POINTS = np.asarray(LIPS)


@dataclass(frozen=True)
class AUProxy:
    """A landmark-based stand-in for one FACS action unit: sum of weight * expression field."""

    name: str
    facs: str
    terms: tuple[tuple[str, float], ...]


AU_PROXIES: tuple[AUProxy, ...] = (
    AUProxy("brow_raise", "AU1+AU2 inner/outer brow raiser",
            (("brow_raise_r", 0.5), ("brow_raise_l", 0.5))),
    AUProxy("brow_inner_raise", "AU1 inner brow raiser", (("brow_inner_raise", 1.0),)),
    AUProxy("brow_furrow", "AU4 brow lowerer (inner brows drawn together)", (("brow_furrow", -1.0),)),
    AUProxy("blink", "AU45 blink / AU43 eyes closed", (("eye_open_r", -0.5), ("eye_open_l", -0.5))),
    AUProxy("upper_lip_raise", "AU10 upper lip raiser", (("upper_lip_raise", 1.0),)),
    AUProxy("lip_corner_pull", "AU12 lip corner puller", (("corner_lift", 1.0),)),
    AUProxy("lip_stretch", "AU20 lip stretcher", (("width", 1.0),)),
    AUProxy("lips_part", "AU25 lips part", (("mouth_open", 1.0),)),
    AUProxy("jaw_drop", "AU26 jaw drop", (("jaw_drop", 1.0),)),
)


def au_values(expression: np.ndarray) -> np.ndarray:
    """Expression vectors (N, 20) -> AU proxy intensities (N, len(AU_PROXIES))."""
    e = np.asarray(expression, dtype=np.float64)
    cols = []
    for au in AU_PROXIES:
        cols.append(sum(w * e[..., FIELDS.index(f)] for f, w in au.terms))
    return np.stack(cols, axis=-1)


def lmd(real: np.ndarray, fake: np.ndarray, points: np.ndarray = FACE_POINTS, scale: float = 1.0) -> np.ndarray:
    """Per-frame landmark distance. real, fake: (N, 478, 2 or 3) pixel landmarks -> (N,) pixels * scale."""
    d = np.linalg.norm(real[:, points, :2] - fake[:, points, :2], axis=-1)
    return d.mean(axis=1) * scale


def lmdv(real: np.ndarray, fake: np.ndarray, consecutive: np.ndarray, points: np.ndarray = FACE_POINTS,
         scale: float = 1.0) -> np.ndarray:
    """Landmark velocity error over frame pairs (t, t+1) where `consecutive[t]` is True (the next row is the
    next video frame and both were tracked). real, fake: (N, 478, 2|3); consecutive: (N-1,) bool -> (M,)."""
    vr = real[1:, points, :2] - real[:-1, points, :2]
    vf = fake[1:, points, :2] - fake[:-1, points, :2]
    d = np.linalg.norm(vr - vf, axis=-1).mean(axis=1) * scale
    return d[np.asarray(consecutive, dtype=bool)]


def rotation_of(pose: np.ndarray) -> np.ndarray:
    """(..., 3, 4) [s*R | t] -> (..., 3, 3) R (the scale removed, re-orthonormalised by SVD)."""
    m = np.asarray(pose, dtype=np.float64)[..., :3, :3]
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    # a reflection would mean a broken pose; keep a proper rotation so the angle stays defined
    det = np.linalg.det(r)
    u[..., :, -1] *= np.sign(det)[..., None]
    return u @ vt


def pose_angle_deg(real_pose: np.ndarray, fake_pose: np.ndarray) -> np.ndarray:
    """Geodesic angle between head rotations. (N, 3, 4) x 2 -> (N,) degrees."""
    r1, r2 = rotation_of(real_pose), rotation_of(fake_pose)
    rel = r1 @ np.swapaxes(r2, -1, -2)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def au_error(real_expr: np.ndarray, fake_expr: np.ndarray) -> np.ndarray:
    """Per-frame, per-AU absolute error (N, len(AU_PROXIES)) in expression units."""
    return np.abs(au_values(real_expr) - au_values(fake_expr))


@dataclass
class TrackedFrames:
    """Tracker output on a sequence of frames (real, rendered or baseline), aligned row by row.

    landmarks: (N, 478, 3) pixels; pose: (N, 3, 4); expression: (N, 20); found: (N,) bool (face detected).
    """

    landmarks: np.ndarray
    pose: np.ndarray
    expression: np.ndarray
    found: np.ndarray


def face_metrics(real: TrackedFrames, fake: TrackedFrames, frame_index: np.ndarray, scale: float = 1.0
                 ) -> dict[str, float]:
    """All face metrics of `fake` against `real` over the frames where both were tracked.

    frame_index: (N,) video frame numbers of the rows (to find consecutive pairs for LMDV).
    scale: multiply pixel distances (e.g. 512 / source width).
    """
    both = np.asarray(real.found, bool) & np.asarray(fake.found, bool)
    out: dict[str, float] = {"face_found": float(np.mean(fake.found)) if len(fake.found) else 0.0}
    if not both.any():
        for k in ("lmd", "lmd_mouth", "lmdv", "lmdv_mouth", "au_error", "pose_d", "mouth_open_r"):
            out[k] = float("nan")
        return out
    rl, fl = real.landmarks[both], fake.landmarks[both]
    idx = np.asarray(frame_index)[both]
    consecutive = np.diff(idx) == 1
    out["lmd"] = float(lmd(rl, fl, FACE_POINTS, scale).mean())
    out["lmd_mouth"] = float(lmd(rl, fl, MOUTH_POINTS, scale).mean())
    v = lmdv(rl, fl, consecutive, FACE_POINTS, scale)
    vm = lmdv(rl, fl, consecutive, MOUTH_POINTS, scale)
    out["lmdv"] = float(v.mean()) if v.size else float("nan")
    out["lmdv_mouth"] = float(vm.mean()) if vm.size else float("nan")
    per_au = au_error(real.expression[both], fake.expression[both])
    out["au_error"] = float(per_au.mean())
    for j, au in enumerate(AU_PROXIES):
        out[f"au_{au.name}"] = float(per_au[:, j].mean())
    out["pose_d"] = float(pose_angle_deg(real.pose[both], fake.pose[both]).mean())
    out["mouth_open_r"] = pearson(mouth_opening(real.expression[both]), mouth_opening(fake.expression[both]))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two (N,) series; NaN when either is constant or N < 3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
