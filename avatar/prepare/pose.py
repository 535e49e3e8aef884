"""Rigid head pose from landmarks: a weak-perspective (scaled orthographic) camera fitted on rigid points.

Per frame the pose is a (3, 4) matrix P = [s*R | t] mapping canonical head space to full-frame pixels
(x right, y down, z away from the camera, z in pixel units): pixel = s * R @ c + t.

Why weak perspective: MediaPipe's landmarks are themselves a weak-perspective reconstruction (x, y in pixels,
z a relative depth in the same scale as x), and a talking head is far from the camera compared with its own
depth, so a per-frame scale `s` replaces the unknown focal length and distance without loss.

How it is solved: generalised Procrustes. The person's mean rigid shape (avatar.expression.RIGID_POINTS,
which move with the skull but not with the jaw, lids or brows) is estimated by alternating (a) a
least-squares similarity fit (Umeyama: SVD of the cross-covariance) of the shape to every frame, with two
rounds of robust re-weighting against outlying points, and (b) the per-point median of the frames brought
back into canonical space. The axes are then turned so that, for the mean face, left-right eye/cheek pairs
lie along x and forehead(10)-to-chin(152) along y; the unit is the neutral face height (10 to 152), the
origin the centroid of the rigid points of the mean shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ideal.avatar.expression import (CHIN, FOREHEAD, L_EYE_LOWER, L_EYE_UPPER, LOWER_LIP_INNER, R_EYE_LOWER,
                               R_EYE_UPPER, RIGID_POINTS, UPPER_LIP_INNER, face_height)

log = logging.getLogger(__name__)

RIGID = np.array(RIGID_POINTS)
# Symmetric (subject's right, subject's left) pairs that define the canonical x axis.
LR_PAIRS = ((33, 263), (133, 362), (234, 454), (127, 356), (93, 323), (98, 327), (129, 358))


@dataclass
class Similarity:
    """Per-frame similarity transforms: pixel = scale * rotation @ c + translation."""

    scale: np.ndarray  # (N,)
    rotation: np.ndarray  # (N, 3, 3)
    translation: np.ndarray  # (N, 3)

    def matrix(self) -> np.ndarray:
        """(N, 3, 4) float32 P = [s*R | t]."""
        n = len(self.scale)
        P = np.zeros((n, 3, 4), dtype=np.float32)
        P[:, :, :3] = self.scale[:, None, None] * self.rotation
        P[:, :, 3] = self.translation
        return P

    def apply(self, c: np.ndarray) -> np.ndarray:
        """Canonical (N, K, 3) -> pixels (N, K, 3)."""
        return (self.scale[:, None, None] * np.einsum("nij,nkj->nki", self.rotation, c)
                + self.translation[:, None, :]).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Pixels (N, K, 3) -> canonical (N, K, 3): R^T (x - t) / s."""
        d = x - self.translation[:, None, :]
        return (np.einsum("nji,nkj->nki", self.rotation, d) / self.scale[:, None, None]).astype(np.float32)


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares s, R, t with dst ~ s R src + t, batched over frames (Umeyama 1991).

    src: (K, 3) shape; dst: (N, K, 3) observations; weights: (N, K) or None.
    """
    n, k, _ = dst.shape
    w = np.ones((n, k)) if weights is None else weights
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    mu_s = np.einsum("nk,kd->nd", w, src)  # (N, 3)
    mu_d = np.einsum("nk,nkd->nd", w, dst)
    xs = src[None] - mu_s[:, None]
    xd = dst - mu_d[:, None]
    cov = np.einsum("nk,nki,nkj->nij", w, xd, xs)  # (N, 3, 3)
    var_s = np.einsum("nk,nkd->n", w, xs * xs)
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones((n, 3))
    D[:, 2] = d
    R = U @ (D[:, :, None] * Vt)
    s = (S * D).sum(axis=1) / np.maximum(var_s, 1e-12)
    t = mu_d - s[:, None] * np.einsum("nij,nj->ni", R, mu_s)
    return Similarity(s, R, t)


def robust_fit(src: np.ndarray, dst: np.ndarray, rounds: int = 2) -> Similarity:
    """`fit_similarity` with Cauchy re-weighting of points whose residual is large for that frame."""
    sim = fit_similarity(src, dst)
    for _ in range(rounds):
        res = np.linalg.norm(sim.apply(np.broadcast_to(src, dst.shape)) - dst, axis=-1)  # (N, K)
        scale = 1.4826 * np.median(res, axis=1, keepdims=True) + 1e-6
        w = 1.0 / (1.0 + (res / (2.0 * scale)) ** 2)
        sim = fit_similarity(src, dst, w)
    return sim


def _normalise(shape: np.ndarray) -> np.ndarray:
    c = shape - shape.mean(axis=0)
    return c / np.sqrt((c ** 2).sum(axis=1).mean())


def mean_rigid_shape(rigid: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Generalised Procrustes mean of rigid points (N, K, 3) of the frames with a face -> (K, 3), centred."""
    ref = int(np.argmin(np.abs(np.arange(len(rigid)) - len(rigid) // 2)))
    mean = _normalise(rigid[ref].astype(np.float64))
    for _ in range(iterations):
        sim = robust_fit(mean, rigid)
        aligned = sim.invert(rigid)
        mean = _normalise(np.median(aligned, axis=0).astype(np.float64))
    return mean


def frontal_rotation(mean_face: np.ndarray) -> np.ndarray:
    """(3, 3) rotation that turns a mean face (478, 3) so that it faces the camera, upright."""
    x = sum(mean_face[left] - mean_face[right] for right, left in LR_PAIRS)
    x = x / np.linalg.norm(x)
    y = mean_face[CHIN] - mean_face[FOREHEAD]
    y = y - x * float(x @ y)
    y = y / np.linalg.norm(y)
    z = np.cross(x, y)
    return np.stack([x, y, z])


def neutral_frames(canonical: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Indices of frames with the mouth closed and the eyes open (canonical (N, 478, 3), valid (N,) bool)."""
    h = face_height(canonical)
    mouth = np.linalg.norm(canonical[:, UPPER_LIP_INNER] - canonical[:, LOWER_LIP_INNER], axis=-1) / h
    eyes = 0.5 * (np.linalg.norm(canonical[:, R_EYE_UPPER] - canonical[:, R_EYE_LOWER], axis=-1)
                  + np.linalg.norm(canonical[:, L_EYE_UPPER] - canonical[:, L_EYE_LOWER], axis=-1)) / h
    idx = np.flatnonzero(valid)
    m_thr = np.percentile(mouth[idx], 25)
    e_thr = np.percentile(eyes[idx], 30)
    sel = idx[(mouth[idx] <= m_thr) & (eyes[idx] >= e_thr)]
    return sel if len(sel) >= 3 else idx


def rotation_to_euler(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) -> (N, 3) degrees: pitch (about x), yaw (about y), roll (about z), extrinsic x-y-z order."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_euler("xyz", degrees=True).astype(np.float32)


def smooth_similarity(sim: Similarity, fps: float, window_s: float, order: int) -> Similarity:
    """Zero-phase smoothing of rotation (as rotation vectors about the mean rotation), log-scale and translation."""
    from scipy.spatial.transform import Rotation

    from ideal.avatar.prepare.smoothing import savgol

    rots = Rotation.from_matrix(sim.rotation)
    mean = rots.mean()
    rel = (mean.inv() * rots).as_rotvec()
    rel = savgol(rel, window_s, order, fps).astype(np.float64)
    R = (mean * Rotation.from_rotvec(rel)).as_matrix()
    s = np.exp(savgol(np.log(sim.scale), window_s, order, fps).astype(np.float64))
    t = savgol(sim.translation, window_s, order, fps).astype(np.float64)
    return Similarity(s, R, t)
