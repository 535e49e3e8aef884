"""`track_clip`: decode a clip onto the frame clock, track the face, solve the head pose and expressions.

This is the part of `ideal prepare` other stages reuse (the audio-to-mouth model runs it on every clip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ideal.avatar.clock import DEFAULT_FPS, SAMPLE_RATE
from ideal.avatar.errors import InputError
from ideal.avatar.expression import RIGID_POINTS, expression_from_landmarks, face_height
from ideal.avatar.prepare.audio import AudioFit, fit_audio, load_clip_audio
from ideal.avatar.prepare.gaps import check_gaps, interpolate_missing
from ideal.avatar.prepare.pose import (Similarity, frontal_rotation, mean_rigid_shape, neutral_frames, robust_fit,
                                 smooth_similarity)
from ideal.avatar.prepare.smoothing import SmoothingConfig, smooth_landmarks
from ideal.avatar.prepare.tracking import FaceTracker, TrackerConfig
from ideal.avatar.prepare.video import VideoInfo, iter_frames, probe_video

log = logging.getLogger(__name__)

RIGID = list(RIGID_POINTS)
# A frame callback sees every output frame once, in order, during the single decoding pass:
# (frame index, RGB uint8 (H, W, 3), raw (478, 3) pixel landmarks of the main face or None).
FrameCallback = Callable[[int, np.ndarray, "np.ndarray | None"], None]


@dataclass(frozen=True)
class TrackConfig:
    max_gap_s: float = field(default=0.5, metadata={
        "help": "longest run of frames without a face that is interpolated, in seconds"})
    second_person_fraction: float = 0.1  # a second face on more than this fraction of frames: two people
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)


@dataclass
class TrackedClip:
    """Everything tracked from one clip, on the output frame clock (N frames at `fps`)."""

    fps: float
    frame_count: int
    width: int
    height: int
    landmarks: np.ndarray  # (N, 478, 3) float32 full-frame pixels, smoothed (= pose applied to canonical)
    pose: np.ndarray  # (N, 3, 4) float32 [s*R | t], canonical -> pixels, smoothed
    canonical: np.ndarray  # (N, 478, 3) float32 in units of the neutral face height
    neutral: np.ndarray  # (478, 3) float32
    expression: np.ndarray  # (N, 20) float32, avatar.expression layout
    interpolated: np.ndarray  # (N,) bool: no face detected, filled by interpolation
    audio_16k: np.ndarray  # (round(N * 16000 / fps),) float32 mono, length-fitted, NOT offset-corrected
    audio_fit: AudioFit | None = None
    audio_source_16k: np.ndarray | None = None  # the excerpt's audio from frame 0, up to 1 s longer (for re-fits)
    audio_beyond_span: int = 0  # samples at the end of audio_source_16k past an excerpt's end
    raw_landmarks: np.ndarray | None = None  # (N, 478, 3) tracker output (NaN where interpolated)
    raw_pose: np.ndarray | None = None  # (N, 3, 4) unsmoothed per-frame fits
    second_face: np.ndarray | None = None  # (N,) bool
    info: VideoInfo | None = None
    start_s: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def scale(self) -> np.ndarray:
        """(N,) pixels per canonical unit (neutral face height in pixels at that frame)."""
        return np.linalg.norm(self.pose[:, :, 0], axis=1)


def solve_pose_and_expression(raw: np.ndarray, detected: np.ndarray, fps: float,
                              cfg: SmoothingConfig = SmoothingConfig()) -> dict:
    """From raw pixel landmarks (N, 478, 3) (NaN where not detected) to smoothed pose, canonical landmarks,
    neutral face and expressions. Returns a dict of arrays (see TrackedClip)."""
    filled = interpolate_missing(raw, detected).astype(np.float64)
    mean = mean_rigid_shape(filled[detected][:, RIGID])
    raw_sim = robust_fit(mean, filled[:, RIGID])
    # Turn the canonical axes to face the camera, using the mean of all points in the first-pass space.
    mean_face = np.median(raw_sim.invert(filled)[detected], axis=0)
    Rf = frontal_rotation(mean_face)
    raw_sim = Similarity(raw_sim.scale, raw_sim.rotation @ Rf.T, raw_sim.translation)
    sim = smooth_similarity(raw_sim, fps, cfg.pose_window_s, cfg.pose_order)
    canonical = smooth_landmarks(sim.invert(filled), fps, cfg)
    neutral = np.median(canonical[neutral_frames(canonical, detected)], axis=0)
    h = float(face_height(neutral))  # canonical unit := neutral face height
    canonical = (canonical / h).astype(np.float32)
    neutral = (neutral / h).astype(np.float32)
    sim = Similarity(sim.scale * h, sim.rotation, sim.translation)
    raw_sim = Similarity(raw_sim.scale * h, raw_sim.rotation, raw_sim.translation)
    landmarks = sim.apply(canonical)
    rigid_res = np.linalg.norm(raw_sim.invert(filled[:, RIGID]) - (Rf @ mean.T).T[None] / h, axis=-1)
    return {
        "landmarks": landmarks, "pose": sim.matrix(), "raw_pose": raw_sim.matrix(), "canonical": canonical,
        "neutral": neutral, "expression": expression_from_landmarks(canonical, neutral),
        "similarity": sim, "raw_similarity": raw_sim,
        "rigid_residual": float(np.median(rigid_res[detected])),
    }


def track_clip(video_path: str | Path, audio_path: str | Path | None = None, fps: float = DEFAULT_FPS,
               start: float | None = None, duration: float | None = None,
               cfg: TrackConfig = TrackConfig(), on_frame: FrameCallback | None = None,
               progress: bool = True) -> TrackedClip:
    """Decode `video_path` onto an `fps` clock, track the face on every frame, fill short gaps, and solve
    pose, canonical landmarks, neutral face and expression vectors. Audio comes from `audio_path` or the
    video's own track, resampled to 16 kHz mono and fitted to the frame count (no A/V offset correction).

    Raises InputError for unreadable files, no audio, no face, long faceless gaps or two people.
    """
    from ideal.avatar.progress import progress_bar

    video_path = Path(video_path)
    audio_path = Path(audio_path) if audio_path is not None else None
    if audio_path is not None and not audio_path.exists():
        raise InputError(f"{audio_path}: no such file", "check the --audio path")
    info = probe_video(video_path)
    span = max(info.duration_s - (start or 0.0), 0.0)
    if duration:
        span = min(span, duration)
    if info.audio_start_time_s is None and audio_path is None:
        raise InputError(f"{video_path}: has no audio track", "pass the speech separately with --audio FILE.wav")

    tracker = FaceTracker(info.width, info.height, cfg.tracker)
    bar = progress_bar(total=int(round(span * fps)) or None, unit="frame", desc=f"tracking {video_path.name}",
               disable=not progress, leave=False)
    try:
        for i, _, rgb in iter_frames(video_path, fps, start, duration):
            pts = tracker.process(rgb)
            if on_frame is not None:
                on_frame(i, rgb, pts)
            bar.update(1)
    finally:
        bar.close()
        tracker.close()
    obs = tracker.result()
    n = len(obs.detected)
    if n == 0:
        raise InputError(f"{video_path}: no frames in the selected range", "check --start/--duration")
    check_gaps(obs.detected, fps, cfg.max_gap_s, str(video_path), start or 0.0)
    if obs.second_face.mean() > cfg.second_person_fraction:
        raise InputError(f"{video_path}: two or more people are in the shot "
                         f"({obs.second_face.mean():.0%} of frames show a second face)",
                         "crop the video to one person (e.g. ffmpeg -vf crop=...)")
    if obs.detected.sum() < 8:
        raise InputError(f"{video_path}: a face was found on only {obs.detected.sum()} frames",
                         "pass a longer video of one person facing the camera")

    solved = solve_pose_and_expression(obs.landmarks, obs.detected, fps, cfg.smoothing)
    pcm = load_clip_audio(video_path, audio_path, info.start_time_s, info.audio_start_time_s, start, n / fps)
    # An excerpt that ends before the video does reads look-ahead audio past its end: not "trimmed".
    excerpt_ends_early = duration is not None and (start or 0.0) + duration < info.duration_s - 1.0 / fps
    beyond = max(0, len(pcm) - int(round(n * SAMPLE_RATE / fps))) if excerpt_ends_early else 0
    audio, fit = fit_audio(pcm, n, fps, source=str(audio_path or video_path), beyond_span=beyond)
    return TrackedClip(
        fps=float(fps), frame_count=n, width=info.width, height=info.height,
        landmarks=solved["landmarks"], pose=solved["pose"], canonical=solved["canonical"],
        neutral=solved["neutral"], expression=solved["expression"], interpolated=~obs.detected,
        audio_16k=audio, audio_fit=fit, audio_source_16k=pcm, audio_beyond_span=beyond,
        raw_landmarks=obs.landmarks, raw_pose=solved["raw_pose"],
        second_face=obs.second_face, info=info, start_s=float(start or 0.0),
        stats={"rigid_residual_face_heights": solved["rigid_residual"]},
    )
