"""Idle motion: what a face does when nothing drives it -- blinks, small gaze saccades and head motion.

Deterministic per seed and random-access by video frame index (the schedule is generated lazily, in order,
and cached), so the offline dub and the live streamer produce the same motion for the same seed.

- Blinks: spontaneous rate ~17/min (conversation: 15-25/min), intervals gamma-distributed (shape 3, so no
  machine-like regularity and no implausibly short gaps, minimum 0.8 s), 12% double blinks. Shape from
  eyelid kinematics: a fast close (~90 ms, accelerating), ~40 ms closed, a slower re-opening (~200 ms,
  decelerating). The blink start has a sub-frame phase so blinks do not all look alike at 25 fps.
- Gaze: fixations of 0.6-3 s between small saccades (1-2 frames) to nearby targets, half of them back to
  the camera; both eyes move together.
- Head pose: the avatar's own tracked pose track played back ping-pong (forwards, then backwards, ...) so
  there is never a jump, lightly smoothed circularly so the turn-around points have no velocity kink, from a
  seeded starting frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ideal.avatar.clock import DEFAULT_FPS
from ideal.avatar.expression import EXPRESSION_DIM, SLICES


@dataclass(frozen=True)
class IdleConfig:
    blinks_per_minute: float = 17.0
    blink_interval_shape: float = 3.0  # gamma shape: 1 would be Poisson, larger is more regular
    min_blink_interval_s: float = 0.8
    double_blink_prob: float = 0.12
    blink_close_s: float = 0.09
    blink_hold_s: float = 0.04
    blink_open_s: float = 0.20
    # eyes-slice delta of a full closure (eye_open is lid gap / eye width, minus neutral, times 10); the
    # avatar's own training data gives a better value (see `blink_depth_from_expressions`)
    blink_depth: float = -2.2
    fixation_min_s: float = 0.6
    fixation_max_s: float = 3.0
    saccade_sd: float = 0.3  # gaze units (iris offset / eye width * 10)
    saccade_max: float = 0.8
    saccade_frames: int = 2
    return_to_centre_prob: float = 0.5
    pose_smooth_frames: float = 2.0  # Gaussian sigma over the ping-pong sequence


def blink_closure(t: np.ndarray, cfg: IdleConfig = IdleConfig()) -> np.ndarray:
    """Lid closure in [0, 1] at seconds `t` after a blink starts (0 outside the blink)."""
    t = np.asarray(t, dtype=np.float64)
    c, h, o = cfg.blink_close_s, cfg.blink_hold_s, cfg.blink_open_s
    out = np.zeros_like(t)
    closing = (t >= 0) & (t < c)
    out[closing] = (1 - np.cos(np.pi * t[closing] / c)) / 2  # eased close
    holding = (t >= c) & (t < c + h)
    out[holding] = 1.0
    opening = (t >= c + h) & (t < c + h + o)
    u = (t[opening] - c - h) / o
    out[opening] = (1.0 - u) ** 2  # decelerating re-opening: fast at first, slow at the end
    return out


def blink_depth_from_expressions(expression: np.ndarray, default: float = IdleConfig.blink_depth) -> float:
    """Blink depth from an avatar's training expressions (N, 20): the 1st percentile of the mean eye opening,
    i.e. how far this person's lids were seen to close, so blinks stay inside what the avatar learned."""
    eyes = np.asarray(expression)[:, SLICES["eyes"].indices].mean(axis=1)
    if eyes.size < 25:
        return default
    lo = float(np.percentile(eyes, 1))
    return lo if lo < 0.3 * default else default  # no clear closure in the data: keep the generic depth


def pingpong_index(i: np.ndarray | int, n: int) -> np.ndarray:
    """Frame of a length-n track at step i when played forwards then backwards, forever."""
    i = np.asarray(i)
    if n <= 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    p = np.mod(i, period)
    return np.where(p < n, p, period - p)


def smooth_pingpong_track(pose_track: np.ndarray, sigma: float) -> np.ndarray:
    """The ping-pong cycle of a (N, 3, 4) pose track, Gaussian-smoothed circularly: (2N-2, 3, 4)."""
    from scipy.ndimage import gaussian_filter1d

    n = len(pose_track)
    cycle = pose_track[pingpong_index(np.arange(max(2 * (n - 1), 1)), n)].astype(np.float64)
    if sigma > 0 and len(cycle) > 2:
        cycle = gaussian_filter1d(cycle, sigma, axis=0, mode="wrap")
        # re-orthonormalise the rotation part, keeping each frame's scale
        m = cycle[:, :, :3]
        u, s, vt = np.linalg.svd(m)
        cycle[:, :, :3] = (u @ vt) * s.mean(axis=1)[:, None, None]
    return cycle.astype(np.float32)


class IdleMotion:
    """Blinks, gaze saccades and head pose per video frame index; seeded and random-access."""

    def __init__(self, pose_track: np.ndarray, fps: float = DEFAULT_FPS, seed: int = 0,
                 cfg: IdleConfig = IdleConfig()) -> None:
        pose_track = np.asarray(pose_track, dtype=np.float32)
        if pose_track.ndim != 3 or pose_track.shape[1:] != (3, 4) or len(pose_track) == 0:
            raise ValueError(f"pose track must be (N>0, 3, 4), got {pose_track.shape}")
        self.cfg, self.fps = cfg, float(fps)
        # one generator per schedule, so the answer for a frame never depends on the order of the questions
        pose_rng, self._blink_rng, self._gaze_rng = (np.random.default_rng(s)
                                                     for s in np.random.SeedSequence(seed).spawn(3))
        self._cycle = smooth_pingpong_track(pose_track, cfg.pose_smooth_frames)
        self._n_track = len(pose_track)
        self._pose_offset = int(pose_rng.integers(len(self._cycle)))
        self._blink_starts: list[float] = []  # seconds
        self._blink_horizon = 0.0
        self._gaze_events: list[tuple[float, np.ndarray]] = [(0.0, np.zeros(2))]  # (time, target xy)
        self._gaze_horizon = 0.0

    # --- schedules, extended lazily ------------------------------------------------------------------------
    def _extend_blinks(self, until_s: float) -> None:
        cfg = self.cfg
        mean = 60.0 / cfg.blinks_per_minute
        while self._blink_horizon <= until_s:
            gap = max(cfg.min_blink_interval_s,
                      self._blink_rng.gamma(cfg.blink_interval_shape, mean / cfg.blink_interval_shape))
            t = self._blink_horizon + gap
            self._blink_starts.append(t)
            if self._blink_rng.random() < cfg.double_blink_prob:
                t += cfg.blink_close_s + cfg.blink_hold_s + cfg.blink_open_s + 0.05
                self._blink_starts.append(t)
            self._blink_horizon = t

    def _extend_gaze(self, until_s: float) -> None:
        cfg = self.cfg
        while self._gaze_horizon <= until_s:
            self._gaze_horizon += self._gaze_rng.uniform(cfg.fixation_min_s, cfg.fixation_max_s)
            if self._gaze_rng.random() < cfg.return_to_centre_prob:
                target = np.zeros(2)
            else:
                target = np.clip(self._gaze_rng.normal(0.0, cfg.saccade_sd, 2), -cfg.saccade_max, cfg.saccade_max)
                target[1] *= 0.5  # vertical saccades while talking are smaller than horizontal ones
            self._gaze_events.append((self._gaze_horizon, target))

    # --- per frame -------------------------------------------------------------------------------------------
    def blink(self, index: int) -> float:
        """Lid closure in [0, 1] at video frame `index`."""
        t = index / self.fps
        self._extend_blinks(t + 1.0)
        starts = np.asarray(self._blink_starts)
        near = starts[(starts <= t) & (starts > t - 1.0)]
        return float(blink_closure(t - near, self.cfg).max()) if near.size else 0.0

    def gaze(self, index: int) -> np.ndarray:
        """(2,) gaze offset (x, y) at video frame `index`, eased over `saccade_frames` after each saccade."""
        t = index / self.fps
        self._extend_gaze(t + 1.0)
        times = [e[0] for e in self._gaze_events]
        k = int(np.searchsorted(times, t, side="right")) - 1
        start_t, target = self._gaze_events[k]
        prev = self._gaze_events[k - 1][1] if k > 0 else target
        frames_since = (t - start_t) * self.fps + 1.0  # the frame the saccade starts in already moves
        u = min(1.0, frames_since / max(self.cfg.saccade_frames, 1))
        return prev + (target - prev) * u

    def pose(self, index: int) -> np.ndarray:
        """(3, 4) head pose at video frame `index` from the ping-pong pose track."""
        return self._cycle[(index + self._pose_offset) % len(self._cycle)].copy()

    def pose_at(self, position: float) -> np.ndarray:
        """(3, 4) head pose at a fractional `position` along the ping-pong cycle (linear between frames), for
        callers that play the track at a varying speed (the streamer moves the head slower while listening)."""
        n = len(self._cycle)
        p = (position + self._pose_offset) % n
        i = int(np.floor(p))
        f = float(p - i)
        return ((1.0 - f) * self._cycle[i] + f * self._cycle[(i + 1) % n]).astype(np.float32)

    def track_index_at(self, position: float) -> int:
        """The pose-track frame nearest `position` (see `pose_at`), for the base plate's torso."""
        return self.track_index(int(round(position)))

    def track_index(self, index: int) -> int:
        """The pose-track frame shown at video frame `index` (so the torso of the avatar's base plate can
        follow the same frame as the head)."""
        return int(pingpong_index((index + self._pose_offset) % len(self._cycle), self._n_track))

    def expression(self, index: int, blink_depth: float | None = None) -> np.ndarray:
        """(20,) idle-only expression: blink on the eyes slice, saccades on the gaze slice, the rest neutral."""
        e = np.zeros(EXPRESSION_DIM, dtype=np.float32)
        depth = self.cfg.blink_depth if blink_depth is None else blink_depth
        e[SLICES["eyes"].indices] = depth * self.blink(index)
        gx, gy = self.gaze(index)
        e[SLICES["gaze"].indices] = (gx, gy, gx, gy)
        return e
