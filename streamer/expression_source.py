"""Streaming adapters over `avatar.drive`: the expression and head pose of each live frame.

The per-frame logic (silence gate, smoothing, prosody-to-brows, idle blinks and saccades, pose track, clip
ping-pong) lives in `avatar.mouth.gate` / `avatar.drive` / `avatar.idle` and is shared with the offline dub; this
module only feeds it one frame at a time from the session's rings:

- the mouth always comes from the live audio (the speaker-independent audio-to-mouth model on the frame's
  window, then `AudioMouth`'s causal silence gate and smoothing), additionally held closed (or at the face's
  rest, `StreamerConfig.silence_mouth`) while the VAD's hysteresis says "no speech", so background noise does
  not move the lips;
- the upper face (brows, eyes, gaze) comes from the selected source: "audio" (the avatar's prosody
  predictor), "neutral" (idle blinks and saccades only) or "clip:PATH" (another person's tracked video,
  looped ping-pong, cross-identity);
- the head pose comes from the avatar's own pose track (`IdleMotion`), whatever the source.

Switching source cross-fades the upper face over `transition_frames`, so a change never jumps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ideal.avatar.drive import (AudioExpression, ClipExpression, DriveFrame, ExpressionDriver, NeutralExpression,
                                UpperFace)
from ideal.avatar.errors import InputError
from ideal.avatar.idle import IdleMotion
from ideal.avatar.mouth.calibration import MouthCalibration
from ideal.avatar.mouth.gate import AudioMouth, GateConfig

log = logging.getLogger(__name__)


def parse_expression(source: str) -> tuple[str, Path | None]:
    """"audio" | "neutral" | "clip:PATH" -> (kind, path). Raises InputError for anything else."""
    if not isinstance(source, str):
        raise InputError(f"expression source {source!r} is not a string", 'use "audio", "neutral" or "clip:PATH"')
    if source in ("audio", "neutral"):
        return source, None
    if source.startswith("clip:"):
        path = Path(source[5:]).expanduser()
        if not source[5:]:
            raise InputError("expression source 'clip:' names no file", "use clip:PATH to a video of a face")
        if not path.is_file():
            raise InputError(f"expression clip {path}: no such file", "pass an existing video file after clip:")
        return "clip", path
    raise InputError(f"unknown expression source {source!r}", 'use "audio", "neutral" or "clip:PATH"')


class ClipLibrary:
    """Tracked driver clips by path, shared by the sessions of an engine.

    Tracking a clip takes seconds (MediaPipe on every frame), far too long to block the event loop of a live
    server: `expressions` tracks synchronously (start-up, tests, preloading), `request` tracks on a worker
    thread and calls back on the event loop when done."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._cache: dict[Path, np.ndarray] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def cached(self, path: Path) -> np.ndarray | None:
        return self._cache.get(path.resolve())

    def expressions(self, path: Path) -> np.ndarray:
        """(N, 20) identity-normalised expression vectors of the clip on the output frame clock."""
        key = path.resolve()
        with self._lock:
            if key not in self._cache:
                from ideal.avatar.driver_clip import track_driver

                log.info("tracking expression clip %s", path)
                self._cache[key] = np.asarray(track_driver(key, self.fps, progress=False), dtype=np.float32)
            return self._cache[key]

    def request(self, path: Path, done: Callable[[np.ndarray | None, BaseException | None], None]) -> None:
        """Track `path` off the event loop; `done(expressions, error)` runs on the loop afterwards."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideal-clip-tracking")
        fut = loop.run_in_executor(self._executor, self.expressions, path)

        def finished(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            done(None if exc else f.result(), exc)

        fut.add_done_callback(finished)


@dataclass
class FrameInputs:
    """What the live audio says about one frame (all causal: available once the frame's lookahead is in)."""

    index: int
    gate_samples: np.ndarray  # (640 + lookahead samples,) the frame's audio plus the mouth model's lookahead
    mouth_window: np.ndarray  # (L, D) the audio-to-mouth model's input window
    prosody_window: np.ndarray | None  # (48, 80) the prosody predictor's mel window, if the avatar has one
    speech: bool  # VAD with hysteresis over the frame and its lookahead


class _ProsodyUpper:
    """`AudioExpression` fed one predicted prosody row per frame."""

    def __init__(self, idle: IdleMotion, blink_depth: float | None) -> None:
        self.idle, self.blink_depth = idle, blink_depth
        self.row = np.zeros((1, 20), np.float32)

    def upper(self, index: int) -> np.ndarray:
        return AudioExpression(prosody=self.row, idle=self.idle, blink_depth=self.blink_depth).upper(index)


class StreamingDriver:
    """Per-session expression + pose, one frame at a time, in frame order."""

    def __init__(self, mouth_model: Any, idle: IdleMotion, fps: float, prosody: Any | None = None,
                 clips: ClipLibrary | None = None, blink_depth: float | None = None,
                 gate: GateConfig = GateConfig(), transition_frames: int = 8, vad_gate: bool = True,
                 mouth_calibration: MouthCalibration | None = None, listening_pose_speed: float = 1.0) -> None:
        self.mouth_model = mouth_model
        self.prosody = prosody
        self.idle = idle
        self.fps = fps
        self.clips = clips or ClipLibrary(fps)
        self.blink_depth = blink_depth
        self.transition_frames = transition_frames
        self.vad_gate = vad_gate
        self._mouth = AudioMouth(fps, gate, calibration=mouth_calibration)  # in the avatar's mouth range
        # the head replays the pose track (recorded while the person spoke) slower while listening: a listener
        # moves less, and lip motion then stands out against head motion; the speed eases between the two
        self.listening_pose_speed = float(listening_pose_speed)
        self._track_position = 0.0
        self._track_speed = self.listening_pose_speed
        self._prosody_upper = _ProsodyUpper(idle, blink_depth)
        self.source = "audio"
        self.pending: str | None = None  # a clip source being tracked
        self.error: str | None = None  # why the last requested source could not be used
        self._upper: UpperFace = self._make_upper("audio", None)
        self._previous: UpperFace | None = None
        self._blend_left = 0

    # --- sources ----------------------------------------------------------------------------------------
    def _make_upper(self, kind: str, clip: np.ndarray | None, name: str = "") -> UpperFace:
        if kind == "audio":
            return self._prosody_upper if self.prosody is not None else NeutralExpression(self.idle, self.blink_depth)
        if kind == "neutral":
            return NeutralExpression(self.idle, self.blink_depth)
        assert clip is not None
        return ClipExpression(clip, on_short="loop", name=name)

    def _switch(self, source: str, upper: UpperFace, fade: bool = True) -> None:
        self._previous, self._upper = (self._upper, upper) if fade else (None, upper)
        self._blend_left = self.transition_frames if fade else 0
        self.source = source
        self.pending = None

    def set_source(self, source: str, fade: bool = True, wait: bool = True) -> None:
        """Switch the upper-face source, cross-fading from the current one. Raises InputError on a bad source.

        A clip not tracked yet is tracked here when `wait`, else on a worker thread: the current source stays
        until it is ready (`pending` names it meanwhile; `error` says why, if tracking failed)."""
        kind, path = parse_expression(source)
        if kind != "clip":
            self._switch(source, self._make_upper(kind, None), fade)
            return
        assert path is not None
        clip = self.clips.cached(path)
        if clip is None and wait:
            clip = self.clips.expressions(path)
        if clip is not None:
            self._switch(source, self._make_upper("clip", clip, path.name), fade)
            return
        self.pending = source

        def done(expr: np.ndarray | None, exc: BaseException | None) -> None:
            if self.pending != source:
                return  # superseded by a later choice
            if exc is not None:
                self.pending, self.error = None, f"{source}: {exc}"
                log.warning("expression source %s failed: %s", source, exc)
                return
            self._switch(source, self._make_upper("clip", expr, path.name), True)

        self.clips.request(path, done)

    # --- per frame ----------------------------------------------------------------------------------------
    def frame(self, inputs: FrameInputs) -> DriveFrame:
        raw = self.mouth_model.predict(inputs.mouth_window[None])[0]
        # the VAD holds the mouth at rest through background noise; the smoothing eases it there
        mouth = self._mouth.step(raw, inputs.gate_samples, voiced=inputs.speech or not self.vad_gate)
        if self.prosody is not None and inputs.prosody_window is not None:
            self._prosody_upper.row = self.prosody.predict_expression(inputs.prosody_window[None])
        out = ExpressionDriver(upper=self._upper, idle=self.idle).frame(inputs.index, mouth)
        self._advance_head(inputs, out)
        if self._previous is not None and self._blend_left > 0:
            old = ExpressionDriver(upper=self._previous, idle=self.idle).frame(inputs.index, mouth)
            w = self._blend_left / (self.transition_frames + 1)  # weight of the old source, falling to 0
            out.expression = (w * old.expression + (1.0 - w) * out.expression).astype(np.float32)
            self._blend_left -= 1
            if self._blend_left == 0:
                self._previous = None
        return out

    @property
    def track_position(self) -> float:
        """Where the head is along the idle pose track (frames of the track played so far)."""
        return self._track_position

    def _advance_head(self, inputs: FrameInputs, out: DriveFrame) -> None:
        target = 1.0 if inputs.speech else self.listening_pose_speed
        self._track_speed += 0.15 * (target - self._track_speed)  # ~0.3 s to change pace, no jolt
        self._track_position += self._track_speed
        out.pose = self.idle.pose_at(self._track_position)
        out.track_index = self.idle.track_index_at(self._track_position)

    @property
    def mouth_gate(self) -> float:
        return self._mouth.gate.gain
