"""The causal silence gate of the mouth: no mouth motion in silence or background noise, the mouth released over
a few frames (no snap), lightly smoothed, and -- with the avatar's calibration (avatar.mouth.calibration) -- in
this face's range and resting at its own rest pose in pauses.

`AudioMouth` steps one video frame at a time (the live streamer); `gated_mouth_track` runs it over a whole clip
(`ideal dub`, `ideal evaluate`, fitting the calibration), so both see the same gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ideal.avatar.audio.io import level_db
from ideal.avatar.clock import DEFAULT_FPS, FrameClock

if TYPE_CHECKING:
    from ideal.avatar.mouth.calibration import MouthCalibration


@dataclass(frozen=True)
class GateConfig:
    """Silence gate on per-frame audio level (dBFS of the frame plus the model's lookahead)."""

    abs_floor_db: float = -50.0  # quieter than this is silence whatever the noise floor
    above_noise_db: float = 10.0  # speech must stand this far above the running noise floor
    noise_rise_db_per_s: float = 3.0  # the floor follows a louder background slowly...
    hangover_frames: int = 3  # ...and the mouth stays live this long after the last voiced frame
    release_frames: int = 3  # then closes over this many frames (no snap)
    smooth_alpha: float = 0.7  # one-pole smoothing of the mouth slice (1 = none): removes frame jitter


class SilenceGate:
    """Causal per-frame gate in [0, 1]; feed the samples of each frame in order with `step`."""

    def __init__(self, fps: float = DEFAULT_FPS, cfg: GateConfig = GateConfig(),
                 initial_floor_db: float | None = None) -> None:
        self.cfg, self.fps = cfg, fps
        # offline the floor is known from the whole file (`noise_floor_db`); live it starts at the first frame
        self._floor_db: float | None = initial_floor_db
        self._since_voiced = 10 ** 6
        self.gain = 0.0

    def step(self, samples: np.ndarray, vad_speech: bool = True) -> float:
        """`vad_speech=False` (a VAD's verdict) closes the gate whatever the level; the noise floor still follows
        the background."""
        cfg = self.cfg
        level = float(level_db(samples)) if np.size(samples) else -120.0
        if self._floor_db is None:
            self._floor_db = min(level, -60.0)
        # the floor drops at once to a quieter frame and rises slowly, so speech never lifts it much
        self._floor_db = min(level, self._floor_db + cfg.noise_rise_db_per_s / self.fps)
        voiced = level > max(cfg.abs_floor_db, self._floor_db + cfg.above_noise_db)
        self._since_voiced = 0 if voiced else self._since_voiced + 1
        if not vad_speech:
            self.gain = 0.0
        elif self._since_voiced <= cfg.hangover_frames:
            self.gain = 1.0
        else:
            self.gain = max(0.0, self.gain - 1.0 / max(cfg.release_frames, 1))
        return self.gain


def frame_levels_db(audio_16k: np.ndarray, fps: float) -> np.ndarray:
    """Per-video-frame level in dBFS of a whole clip: (N,)."""
    clock = FrameClock(fps)
    n = clock.frames_for_samples(len(audio_16k))
    spf = int(round(clock.samples_per_frame))
    x = np.asarray(audio_16k[:n * spf], dtype=np.float64).reshape(n, spf) if n else np.zeros((0, spf))
    return level_db(x, axis=1)


def noise_floor_db(audio_16k: np.ndarray, fps: float) -> float:
    """Background level of a whole clip: the 10th percentile of its frame levels."""
    levels = frame_levels_db(audio_16k, fps)
    return float(np.percentile(levels, 10)) if levels.size else -120.0


def frame_gate_samples(audio_16k: np.ndarray, index: int, clock: FrameClock, lookahead_ms: float) -> np.ndarray:
    """The samples the gate sees for frame `index`: the frame itself plus the model's lookahead, so the gate
    opens on the same frame the mouth model hears the onset."""
    a = clock.frame_start_sample(index)
    b = clock.frame_start_sample(index + 1) + int(round(lookahead_ms * clock.sample_rate / 1000.0))
    return audio_16k[a:min(b, len(audio_16k))]


class AudioMouth:
    """Mouth slices (10,) per video frame from speech, gated and smoothed causally.

    `raw` are the mouth model's outputs per frame (from `predict_frames`, or one row at a time while
    streaming); `step(raw_row, frame_samples)` returns the gated, smoothed row for the next frame. With the
    avatar's `calibration` (avatar.mouth.calibration) the output is in this face's range, and silence rests the
    mouth at its own rest pose instead of the neutral (most closed) one.
    """

    def __init__(self, fps: float = DEFAULT_FPS, cfg: GateConfig = GateConfig(),
                 initial_floor_db: float | None = None, calibration: MouthCalibration | None = None) -> None:
        self.cfg = cfg
        self.gate = SilenceGate(fps, cfg, initial_floor_db)
        self.calibration = calibration
        self._state: np.ndarray | None = None

    def step(self, raw_mouth: np.ndarray, frame_samples: np.ndarray, voiced: bool = True) -> np.ndarray:
        """`voiced=False` (a VAD's verdict) holds the mouth at rest even where the level gate would open."""
        g = self.gate.step(frame_samples, voiced)
        raw = np.asarray(raw_mouth, dtype=np.float32)
        cal = self.calibration
        if cal is not None:
            raw = cal.apply(raw)
        target = g * raw if cal is None else g * raw + (1.0 - g) * cal.rest
        a = self.cfg.smooth_alpha
        self._state = target if self._state is None else a * target + (1 - a) * self._state
        return self._state.astype(np.float32)


def gated_mouth_track(raw: np.ndarray, audio_16k: np.ndarray, fps: float, lookahead_ms: float,
                      cfg: GateConfig = GateConfig(),
                      calibration: MouthCalibration | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run `AudioMouth` over a whole clip: raw (N, 10) -> (gated mouth (N, 10), gate (N,)); `calibration` is
    the avatar's (avatar.mouth.calibration), None for the model's own range and a zero mouth in silence."""
    clock = FrameClock(fps)
    am = AudioMouth(fps, cfg, initial_floor_db=noise_floor_db(audio_16k, fps), calibration=calibration)
    out = np.zeros_like(raw, dtype=np.float32)
    gates = np.zeros(len(raw), dtype=np.float32)
    for i in range(len(raw)):
        out[i] = am.step(raw[i], frame_gate_samples(audio_16k, i, clock, lookahead_ms))
        gates[i] = am.gate.gain
    return out, gates
