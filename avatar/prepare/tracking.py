"""Per-frame face landmarks with MediaPipe Face Mesh (478 points with irises, bundled model, offline).

The tracker runs in video mode (`static_image_mode=False`: detection once, then landmark tracking) with
`max_num_faces=2`, so a second person in the shot is seen. Per frame it keeps the face that continues the
previous one (nearest centre), and counts frames where a second, comparably large face is present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ideal.avatar.expression import CHIN, FOREHEAD, N_LANDMARKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerConfig:
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    # A second face counts as a second person when its height is at least this fraction of the main face's.
    second_face_min_rel_size: float = 0.35


@dataclass
class FaceObservations:
    """Raw tracker output for a clip of N frames."""

    landmarks: np.ndarray  # (N, 478, 3) float32, full-frame pixels (z in pixel units, x-scaled); NaN where no face
    detected: np.ndarray  # (N,) bool
    second_face: np.ndarray  # (N,) bool: a second comparably large face was present


class FaceTracker:
    """Stateful per-frame tracker; feed frames in order with `process`."""

    def __init__(self, width: int, height: int, cfg: TrackerConfig = TrackerConfig()) -> None:
        import mediapipe as mp

        self.cfg = cfg
        self.width, self.height = width, height
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=2, refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence)
        self._scale = np.array([width, height, width], dtype=np.float32)
        self._prev_centre: np.ndarray | None = None
        self._landmarks: list[np.ndarray | None] = []
        self._second: list[bool] = []

    def process(self, rgb: np.ndarray) -> np.ndarray | None:
        """Track one RGB uint8 (H, W, 3) frame; returns the main face's (478, 3) pixel landmarks or None."""
        result = self._mesh.process(rgb)
        faces = []
        for f in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in f.landmark], dtype=np.float32) * self._scale
            if pts.shape[0] == N_LANDMARKS:
                faces.append(pts)
        main = None
        second = False
        if faces:
            centres = [f[:, :2].mean(axis=0) for f in faces]
            heights = [float(np.linalg.norm(f[FOREHEAD, :2] - f[CHIN, :2])) for f in faces]
            if self._prev_centre is not None:
                order = np.argsort([np.linalg.norm(c - self._prev_centre) for c in centres])
            else:
                order = np.argsort([-h for h in heights])
            main_i = int(order[0])
            main = faces[main_i]
            self._prev_centre = centres[main_i]
            if len(faces) > 1:
                other = int(order[1])
                # Two meshes on one face happen when tracking re-detects: require a separate location.
                apart = np.linalg.norm(centres[other] - centres[main_i]) > 0.5 * heights[main_i]
                second = apart and heights[other] >= self.cfg.second_face_min_rel_size * heights[main_i]
        self._landmarks.append(main)
        self._second.append(second)
        return main

    def result(self) -> FaceObservations:
        n = len(self._landmarks)
        lm = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
        detected = np.zeros(n, dtype=bool)
        for i, pts in enumerate(self._landmarks):
            if pts is not None:
                lm[i] = pts
                detected[i] = True
        return FaceObservations(lm, detected, np.array(self._second, dtype=bool))

    def close(self) -> None:
        self._mesh.close()
