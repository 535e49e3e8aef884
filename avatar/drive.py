"""Expression and pose drivers: where each slice of the expression vector comes from at run time.

Every source answers per video frame index, so the offline dub (whole clips, batched) and the live streamer
(frame by frame) share them:

- the mouth slice from speech: the speaker-independent audio-to-mouth model behind the causal silence gate of
  avatar.mouth.gate (`AudioMouth`), handed to `ExpressionDriver.frame` per frame.
- `AudioExpression`: brows/eyes from the avatar's prosody predictor (pitch, energy); gaze neutral; idle blinks,
  saccades and head pose on top.
- `ClipExpression`: another person's tracked clip (cross-identity: its expression vectors are already
  identity-normalised deltas from that person's neutral face); brows, eyes and gaze from the clip; the mouth
  from the clip (`mouth="driver"`) or from the audio (`mouth="audio"`); a clip shorter than the audio loops
  (ping-pong, so there is no jump) or holds its last frame.
- `NeutralExpression`: neutral brows, idle blinks and saccades; mouth from the audio.

Head pose always comes from the avatar's own pose track through `IdleMotion` (a driver's pose lives in another
person's camera and would move this avatar's head out of its plate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.avatar.idle import IdleMotion, pingpong_index

MOUTH = SLICES["mouth"].indices
UPPER_NAMES = ("brows", "eyes", "gaze")


@dataclass
class DriveFrame:
    """What drives one rendered frame: expression (20,) and head pose (3, 4) [s*R | t]."""

    expression: np.ndarray
    pose: np.ndarray
    track_index: int | None = None  # the pose-track frame of the base plate's torso (None: from the index)


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
