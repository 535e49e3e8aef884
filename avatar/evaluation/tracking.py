"""The prepare stage's face tracker, applied identically to real, rendered and baseline frames.

Same MediaPipe tracker (`avatar.prepare.tracking.FaceTracker`), same rigid-point pose fit
(`avatar.prepare.pose.robust_fit` on `RIGID_POINTS`) against the dataset's own neutral face, same expression
vector (`avatar.expression.expression_from_landmarks`). Unlike `ideal prepare` nothing is smoothed or
interpolated: the metrics compare raw per-frame measurements, and a frame whose face is not found counts as
a detection failure of that method instead of being filled in.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ideal.avatar.evaluation.face_metrics import TrackedFrames
from ideal.avatar.expression import EXPRESSION_DIM, N_LANDMARKS, RIGID_POINTS, expression_from_landmarks


def track_frames(frames: Iterable[np.ndarray], neutral: np.ndarray) -> TrackedFrames:
    """Track an in-order sequence of full RGB uint8 frames (H, W, 3) of one person.

    neutral: (478, 3) the person's canonical neutral face (dataset `neutral.npy`), which fixes the canonical
    space the pose maps from and the face the expressions are deltas from.
    """
    from ideal.avatar.prepare.pose import robust_fit
    from ideal.avatar.prepare.tracking import FaceTracker

    tracker: FaceTracker | None = None
    raw: list[np.ndarray | None] = []
    try:
        for rgb in frames:
            if tracker is None:
                tracker = FaceTracker(rgb.shape[1], rgb.shape[0])
            raw.append(tracker.process(np.ascontiguousarray(rgb)))
    finally:
        if tracker is not None:
            tracker.close()
    n = len(raw)
    found = np.array([r is not None for r in raw], dtype=bool)
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, np.float32)
    pose = np.full((n, 3, 4), np.nan, np.float32)
    expression = np.full((n, EXPRESSION_DIM), np.nan, np.float32)
    if found.any():
        lm = np.stack([r for r in raw if r is not None]).astype(np.float64)
        rigid = list(RIGID_POINTS)
        sim = robust_fit(np.asarray(neutral, np.float64)[rigid], lm[:, rigid])
        canonical = sim.invert(lm)
        landmarks[found] = lm
        pose[found] = sim.matrix()
        expression[found] = expression_from_landmarks(canonical, np.asarray(neutral, np.float32))
    return TrackedFrames(landmarks=landmarks, pose=pose, expression=expression, found=found)
