"""Where the mouth is in an avatar's served frames, for the browser test's lip check: MediaPipe's lips on the
engine's idle frame, grown by how far the avatar's head moves along its idle pose track (pose = [sR | t], t in
output pixels). Test code: the server never needs it, so it does not run MediaPipe at every start for it."""

from __future__ import annotations

import numpy as np

from ideal.avatar.expression import LIPS


def lips_box(image: np.ndarray) -> tuple[float, float, float, float] | None:
    """(H, W, 3) uint8 RGB -> (x0, y0, x1, y1) of the lips in pixels, or None when no face is found."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark])[list(LIPS)]
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def mouth_box(image: np.ndarray, pose_track: np.ndarray | None = None, grow: float = 0.3) -> list[int] | None:
    """The box [x0, y0, x1, y1] (ints, inside the frame) that holds the mouth in every frame of the idle motion:
    the lips of `image` grown by `grow` of their size on each side and by half the spread of the pose track's
    translation. None when `image` shows no face."""
    box = lips_box(image)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    mx, my = grow * (x1 - x0), grow * (y1 - y0) + 0.15 * (x1 - x0)  # a closed mouth is thin: add some height
    if pose_track is not None and len(pose_track):
        t = np.asarray(pose_track, np.float64)[:, :2, 3]
        spread = t.max(axis=0) - t.min(axis=0)
        mx += spread[0] / 2
        my += spread[1] / 2
    h, w = image.shape[:2]
    return [max(0, int(x0 - mx)), max(0, int(y0 - my)), min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))]
