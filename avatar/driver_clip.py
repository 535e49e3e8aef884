"""Tracking another person's clip to drive an avatar (cross-identity): expressions only, no audio needed.

Uses the prepare stage's decoding (onto the output frame clock, so a 30 fps driver drives 25 fps output in
real time), tracker, gap filling and pose/expression solver, so the driver's expression vectors are
identity-normalised exactly like a training set's: deltas from the driver's own neutral face.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)


def track_driver(video: str | Path, fps: float, max_gap_s: float = 1.0, progress: bool = True) -> np.ndarray:
    """Expression vectors (N, 20) of the face in `video`, on an `fps` clock.

    Raises InputError when the file is not a video, or shows no face (or too little of one)."""
    from ideal.avatar.progress import progress_bar

    from ideal.avatar.prepare.gaps import check_gaps
    from ideal.avatar.prepare.track import solve_pose_and_expression
    from ideal.avatar.prepare.tracking import FaceTracker
    from ideal.avatar.prepare.video import iter_frames, probe_video

    video = Path(video)
    info = probe_video(video)  # InputError for missing / not a video
    tracker = FaceTracker(info.width, info.height)
    try:
        for _, _, rgb in progress_bar(iter_frames(video, fps), desc=f"tracking driver {video.name}", unit="frame",
                              leave=False, disable=not progress):
            tracker.process(rgb)
    finally:
        tracker.close()
    obs = tracker.result()
    if len(obs.detected) == 0 or not obs.detected.any():
        raise InputError(f"{video}: no face found in the driver clip",
                         "pass a video of one person facing the camera, or --expression audio|neutral")
    if obs.detected.sum() < 8:
        raise InputError(f"{video}: a face was found on only {int(obs.detected.sum())} frames of the driver clip",
                         "pass a longer driver clip of one person facing the camera")
    check_gaps(obs.detected, fps, max_gap_s, str(video))
    solved = solve_pose_and_expression(obs.landmarks, obs.detected, fps)
    log.info("driver %s: %d frames (%.1f s), face on %.0f%%", video.name, len(obs.detected),
             len(obs.detected) / fps, 100 * obs.detected.mean())
    return solved["expression"].astype(np.float32)
