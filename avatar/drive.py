"""Expression and pose drivers: where each slice of the expression vector comes from at run time.

Every source answers per video frame index, so the offline dub (whole clips, batched) and the live streamer
(frame by frame) share them:

- `AudioMouth`: the mouth slice from speech through the speaker-independent audio-to-mouth model, with a
  causal silence gate (no mouth motion in silence or background noise) and light causal smoothing.
- `AudioExpression`: mouth from `AudioMouth`; brows/eyes from the avatar's prosody predictor (pitch, energy);
  gaze neutral; idle blinks, saccades and head pose on top.
- `ClipExpression`: another person's tracked clip (cross-identity: its expression vectors are already
  identity-normalised deltas from that person's neutral face); brows, eyes and gaze from the clip; the mouth
  from the clip (`mouth="driver"`) or from the audio (`mouth="audio"`); a clip shorter than the audio loops
  (ping-pong, so there is no jump) or holds its last frame.
- `NeutralExpression`: neutral brows, idle blinks and saccades; mouth from the audio.

Head pose always comes from the avatar's own pose track through `IdleMotion` (a driver's pose lives in another
person's camera and would move this avatar's head out of its plate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from ideal.avatar.clock import FrameClock
from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.avatar.idle import IdleMotion

if TYPE_CHECKING:
    from ideal.avatar.mouth.calibration import MouthCalibration

log = logging.getLogger(__name__)

MOUTH = SLICES["mouth"].indices
UPPER_NAMES = ("brows", "eyes", "gaze")


@dataclass
class DriveFrame:
    """What drives one rendered frame: expression (20,) and head pose (3, 4) [s*R | t]."""

    expression: np.ndarray
    pose: np.ndarray
    track_index: int | None = None  # the pose-track frame of the base plate's torso (None: from the index)


# --- audio: mouth ---------------------------------------------------------------------------------------------
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

    def __init__(self, fps: float = 25.0, cfg: GateConfig = GateConfig(),
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
        x = np.asarray(samples, dtype=np.float64)
        level = 10.0 * np.log10(np.mean(x * x) + 1e-12) if x.size else -120.0
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
    return 10.0 * np.log10(np.mean(x * x, axis=1) + 1e-12)


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

    `raw` are the mouth model's outputs per frame (from `predict_mouth`, or one row at a time while
    streaming); `step(raw_row, frame_samples)` returns the gated, smoothed row for the next frame. With the
    avatar's `calibration` (avatar.mouth.calibration) the output is in this face's range, and silence rests the
    mouth at its own rest pose instead of the neutral (most closed) one.
    """

    def __init__(self, fps: float = 25.0, cfg: GateConfig = GateConfig(),
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


def predict_mouth(mouth_model, audio_16k: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Raw mouth-model output for frames 0..n-1 of a whole clip: (n_frames, 10)."""
    from ideal.avatar.mouth.inference import predict_frames

    return predict_frames(mouth_model, audio_16k, n_frames, fps)


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


# --- upper face sources ---------------------------------------------------------------------------------------
class UpperFace(Protocol):
    """A source of brows/eyes/gaze: a full (20,) vector per frame whose mouth slice is ignored."""

    def upper(self, index: int) -> np.ndarray: ...


@dataclass
class NeutralExpression:
    """Neutral brows, idle blinks and gaze saccades."""

    idle: IdleMotion
    blink_depth: float | None = None

    def upper(self, index: int) -> np.ndarray:
        return self.idle.expression(index, self.blink_depth)


@dataclass
class AudioExpression:
    """Brows and eyes from the avatar's prosody predictor (one row per frame, brows+eyes slices of a (20,)
    vector), blinks and saccades from `idle` added on top."""

    prosody: np.ndarray  # (N, 20) predicted expressions; only brows and eyes are read
    idle: IdleMotion
    blink_depth: float | None = None

    def upper(self, index: int) -> np.ndarray:
        e = self.idle.expression(index, self.blink_depth)
        row = self.prosody[min(index, len(self.prosody) - 1)]
        e[SLICES["brows"].indices] = row[SLICES["brows"].indices]
        e[SLICES["eyes"].indices] += row[SLICES["eyes"].indices]
        return e


@dataclass
class ClipExpression:
    """Another person's tracked clip (N, 20) at the output fps; loops (ping-pong) or holds past its end."""

    expression: np.ndarray
    on_short: str = "loop"  # "loop" | "hold"
    name: str = "driver"

    def __post_init__(self) -> None:
        if self.on_short not in ("loop", "hold"):
            raise ValueError(f"on_short must be 'loop' or 'hold', got {self.on_short!r}")
        if len(self.expression) == 0:
            raise ValueError("empty driver clip")

    def source_index(self, index: int) -> int:
        from ideal.avatar.idle import pingpong_index

        n = len(self.expression)
        if index < n:
            return index
        return n - 1 if self.on_short == "hold" else int(pingpong_index(index, n))

    def upper(self, index: int) -> np.ndarray:
        return self.expression[self.source_index(index)].astype(np.float32)

    def mouth(self, index: int) -> np.ndarray:
        return self.expression[self.source_index(index), MOUTH].astype(np.float32)

    def coverage_note(self, n_frames: int, fps: float) -> str | None:
        """A sentence for the user when the clip is shorter than the output, else None."""
        n = len(self.expression)
        if n >= n_frames:
            return None
        how = ("loops (played forwards and backwards, so there is no jump)" if self.on_short == "loop"
               else "holds its last frame")
        return (f"{self.name} is {n / fps:.1f} s, shorter than the {n_frames / fps:.1f} s of audio: "
                f"its expression {how} for the remaining {(n_frames - n) / fps:.1f} s")


# --- the combination --------------------------------------------------------------------------------------------
@dataclass
class ExpressionDriver:
    """Combines a mouth (audio or driver clip), an upper-face source and the idle head pose per frame."""

    upper: UpperFace
    idle: IdleMotion
    mouth_clip: ClipExpression | None = None  # set: mouth from the driver clip instead of the audio

    def frame(self, index: int, audio_mouth: np.ndarray | None = None) -> DriveFrame:
        """audio_mouth: (10,) gated mouth slice for this frame (ignored when the mouth comes from a clip)."""
        e = np.zeros(EXPRESSION_DIM, dtype=np.float32)
        up = self.upper.upper(index)
        for name in UPPER_NAMES:
            e[SLICES[name].indices] = up[SLICES[name].indices]
        if self.mouth_clip is not None:
            e[MOUTH] = self.mouth_clip.mouth(index)
        elif audio_mouth is not None:
            e[MOUTH] = audio_mouth
        return DriveFrame(e, self.idle.pose(index))

    def clip(self, n_frames: int, audio_mouth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Whole clip: expressions (N, 20) and poses (N, 3, 4)."""
        frames = [self.frame(i, None if audio_mouth is None else audio_mouth[i]) for i in range(n_frames)]
        return (np.stack([f.expression for f in frames]).astype(np.float32),
                np.stack([f.pose for f in frames]).astype(np.float32))


ProsodyFn = Callable[[np.ndarray, int], np.ndarray]  # (audio_16k, n_frames) -> (n_frames, 20)


@dataclass
class DriveSpec:
    """What the user asked for (`ideal dub`): the expression source and where the mouth comes from."""

    expression: str = "audio"  # "audio" | "neutral" | "driver"
    mouth: str = "audio"  # "audio" | "driver"
    on_short: str = "loop"
    seed: int = 0
    gate: GateConfig = field(default_factory=GateConfig)
