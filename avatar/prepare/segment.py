"""Head / torso / background masks and the clean background plate.

Person vs background comes from MediaPipe Selfie Segmentation (bundled model, offline). The head is the
part of the person inside a head region drawn from the landmarks -- a wide band around the face (hair, ears)
down to the mouth corners, narrowing to the neck's width at the chin line (so the neck under the jaw is head,
shoulders and collar are not) -- united with the face-oval polygon (the segmenter sometimes misses skin);
the torso is the rest of the person. Labels: 0 background, 1 torso, 2 head.

The plate is a per-pixel median over sampled frames, of only the samples where that pixel is background
(with the person dilated, so no hair halo leaks in); pixels the person always covers are filled by push-pull
interpolation of the surrounding background (a smooth colour field: Telea inpainting of such large holes
left streaks and cost seconds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ideal.avatar.expression import CHIN, FACE_OVAL, FOREHEAD, MOUTH_CORNER_L, MOUTH_CORNER_R

log = logging.getLogger(__name__)

BACKGROUND, TORSO, HEAD = 0, 1, 2


@dataclass(frozen=True)
class SegmentConfig:
    person_threshold: float = 0.5
    chin_margin: float = 0.02  # in face heights below the chin that still count as head
    band_extra: float = 0.35  # head band half-width = half face width + this many face heights
    neck_width: float = 0.6  # neck width at the chin line, as a fraction of the jaw width at the mouth
    plate_samples: int = 80  # frames kept for the background median (more changed nothing visible)
    plate_dilate_frac: float = 0.03  # person dilation for the plate, as a fraction of the image size
    min_plate_votes: int = 2  # fewer background samples than this at a pixel: fill it from its surroundings
    moving_camera_diff: float = 10.0  # median abs difference (grey levels) of background pixels to the plate
    moving_camera_shift: float = 0.015  # background drift (phase correlation) over the clip, fraction of width


class Segmenter:
    """Per-frame person segmentation and head/torso labelling."""

    def __init__(self, width: int, height: int, cfg: SegmentConfig = SegmentConfig()) -> None:
        import mediapipe as mp

        self.cfg = cfg
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def person(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> person probability (H, W) float32 in [0, 1]."""
        return self._seg.process(rgb).segmentation_mask

    def labels(self, person_prob: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Person probability (H, W) and the face's (478, 3) pixel landmarks -> labels (H, W) uint8."""
        import cv2

        cfg = self.cfg
        p = landmarks[:, :2].astype(np.float64)
        down = p[CHIN] - p[FOREHEAD]
        fh = float(np.linalg.norm(down)) + 1e-6
        down /= fh
        right = np.array([-down[1], down[0]])
        oval = p[list(FACE_OVAL)]
        proj = oval @ right
        u_c = 0.5 * (proj.min() + proj.max())  # lateral centre of the face
        wide = 0.5 * float(np.ptp(proj)) + cfg.band_extra * fh
        v_chin = float(p[CHIN] @ down) + cfg.chin_margin * fh
        v_mouth = float(0.5 * (p[MOUTH_CORNER_R] + p[MOUTH_CORNER_L]) @ down)
        jaw = proj[oval @ down >= v_mouth]  # the oval below the mouth corners: the jaw line
        narrow = 0.5 * float(np.ptp(jaw)) if len(jaw) > 1 else 0.5 * float(np.ptp(proj))
        v_top = v_chin - 10.0 * fh
        # The head region as one polygon in (lateral u, downward v) face coordinates: a wide band (hair, ears)
        # down to the mouth corners, then a trapezoid from the jaw's width to the neck's down to the chin line,
        # so the neck under the jaw is head and a collar or raised shoulder beside the jaw is not. Drawing a
        # polygon is far cheaper than per-pixel tests.
        neck = cfg.neck_width * narrow
        uv = [(-wide, v_top), (wide, v_top), (wide, v_mouth), (narrow, v_mouth), (neck, v_chin),
              (-neck, v_chin), (-narrow, v_mouth), (-wide, v_mouth)]
        poly = np.array([(u_c + u) * right + v * down for u, v in uv])
        region = np.zeros(person_prob.shape, np.uint8)
        cv2.fillPoly(region, [np.round(poly * 16).astype(np.int32)], 1, shift=4)
        person = (person_prob > cfg.person_threshold).view(np.uint8)
        head = region & person
        cv2.fillConvexPoly(head, cv2.convexHull(np.round(oval).astype(np.int32)), 1)
        out = person.copy()  # TORSO == 1 where person
        out[head.astype(bool)] = HEAD
        return out

    def close(self) -> None:
        self._seg.close()


@dataclass
class PlateBuilder:
    """Collects every k-th frame with its background mask; `build` returns the plate and its statistics."""

    width: int
    height: int
    expected_frames: int
    cfg: SegmentConfig = field(default_factory=SegmentConfig)

    def __post_init__(self) -> None:
        self.every = max(1, int(np.ceil(self.expected_frames / self.cfg.plate_samples)))
        self.frames: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        k = max(3, int(self.cfg.plate_dilate_frac * max(self.width, self.height)) | 1)
        self._kernel = np.ones((k, k), np.uint8)

    def add(self, index: int, rgb: np.ndarray, labels: np.ndarray) -> None:
        import cv2

        if index % self.every:
            return
        person = cv2.dilate((labels != BACKGROUND).astype(np.uint8), self._kernel)
        self.frames.append(rgb.copy())
        self.masks.append(person == 0)

    def build(self) -> tuple[np.ndarray, dict]:
        """-> (plate RGB uint8 (H, W, 3), stats: never-seen fraction, background change score)."""

        frames = np.stack(self.frames)  # (K, H, W, 3)
        bg = np.stack(self.masks)  # (K, H, W)
        votes = bg.sum(axis=0)
        plate = np.zeros((self.height, self.width, 3), np.uint8)
        plate = _masked_median(frames, bg)
        unseen = (votes < self.cfg.min_plate_votes).astype(np.uint8)
        if unseen.any():
            plate = fill_holes(plate, unseen == 0)
        # How much the background moves: median over samples of the mean abs difference on background pixels.
        diffs = []
        for f, m in zip(frames, bg):
            if m.sum() > 0.02 * m.size:
                diffs.append(float(np.abs(f.astype(np.int16) - plate.astype(np.int16))[m].mean()))
        change = float(np.median(diffs)) if diffs else 0.0
        drift = background_drift(frames, bg)
        moving = change > self.cfg.moving_camera_diff or drift > self.cfg.moving_camera_shift * self.width
        stats = {"plate_samples": int(len(frames)), "never_background_fraction": float(unseen.mean()),
                 "background_change": change, "background_drift_px": drift,
                 "moving_camera_suspected": bool(moving)}
        return plate, stats


def _masked_median(frames: np.ndarray, keep: np.ndarray, chunk_px: int = 1 << 16) -> np.ndarray:
    """Per-pixel median of frames (K, H, W, 3) uint8 over the samples where keep (K, H, W) is True
    (lower median; 0 where no sample is kept). Sorting uint16 with excluded samples pushed to the end is
    ~10x faster than np.nanmedian on float."""
    k, h, w, _ = frames.shape
    f = frames.reshape(k, h * w, 3)
    m = keep.reshape(k, h * w)
    out = np.zeros((h * w, 3), np.uint8)
    for a in range(0, h * w, chunk_px):
        x = f[:, a:a + chunk_px].astype(np.uint16)
        x[~m[:, a:a + chunk_px]] = 1024
        x.sort(axis=0)
        cnt = m[:, a:a + chunk_px].sum(axis=0)
        idx = np.maximum(cnt - 1, 0) // 2
        med = np.take_along_axis(x, idx[None, :, None].repeat(3, axis=2), axis=0)[0]
        out[a:a + chunk_px] = np.where(cnt[:, None] > 0, med, 0).astype(np.uint8)
    return out.reshape(h, w, 3)


def background_drift(frames: np.ndarray, keep: np.ndarray, max_side: int = 320) -> float:
    """How far the background content travels over the clip, in full-resolution pixels.

    Corners are picked on the background (keep True, the person dilated) of each sample (K, H, W, 3) and
    followed into the next sample with pyramidal Lucas-Kanade; the median displacement is accumulated and the
    result is the largest distance of that path from its start. A static camera gives about a pixel or less
    (compression noise), a pan or a hand-held camera tens of pixels."""
    import cv2

    k, h, w, _ = frames.shape
    if k < 2:
        return 0.0
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    size = (w // f, h // f)
    grey = [cv2.resize(cv2.cvtColor(fr, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA) for fr in frames]
    masks = [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in keep]
    pos = np.zeros(2)
    extent = 0.0
    for i in range(k - 1):
        pts = cv2.goodFeaturesToTrack(grey[i], maxCorners=200, qualityLevel=0.01, minDistance=5, mask=masks[i])
        if pts is None or len(pts) < 8:
            continue
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(grey[i], grey[i + 1], pts, None, winSize=(21, 21), maxLevel=3)
        ok = status.reshape(-1) == 1
        if ok.sum() < 8:
            continue
        d = np.median((nxt - pts).reshape(-1, 2)[ok], axis=0)
        pos += d * f
        extent = max(extent, float(np.hypot(*pos)))
    return extent


def fill_holes(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill pixels where known (H, W) is False in img (H, W, 3) uint8 by push-pull: a weighted image pyramid
    is built from the known pixels (push), then every unknown pixel takes the upsampled value of the first
    coarser level that knows it (pull). Smooth, seamless and linear in the pixel count."""
    import cv2

    w0 = known.astype(np.float32)
    levels = [(img.astype(np.float32) * w0[..., None], w0)]
    while min(levels[-1][1].shape) > 4 and levels[-1][1].min() == 0:
        c, w = levels[-1]
        levels.append((cv2.pyrDown(c), cv2.pyrDown(w)))
    c, w = levels[-1]
    est = c / np.maximum(w, 1e-6)[..., None]
    if (w <= 1e-6).any():  # nothing known at all in some coarse cells: use the global mean
        mean = (levels[0][0].sum(axis=(0, 1)) / max(levels[0][1].sum(), 1e-6)).astype(np.float32)
        est[w <= 1e-6] = mean
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(est, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        a = np.clip(w, 0.0, 1.0)[..., None]
        est = a * (c / np.maximum(w, 1e-6)[..., None]) + (1 - a) * up
    out = img.copy()
    out[~known] = np.clip(est[~known], 0, 255).round().astype(np.uint8)
    return out
