"""One streamer session's frames, read once and fanned out to every subscriber's tracks.

The owner of the session sees the avatar (video only: a user never hears their own voice back); everyone else in
the room gets video plus the owner's voice as the streamer delayed it to the frame it animates. The colour
conversion and the 16 -> 48 kHz resampling happen once here, not once per subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from scipy.signal import firwin, lfilter

from ideal.server.latency import SendTrace, SessionTrace
from ideal.server.metrics import FrameRate, ServerMetrics
from ideal.server.tracks import AUDIO_RATE, AvatarVideoTrack, LipAlignedAudioTrack

log = logging.getLogger(__name__)


class StreamSession(Protocol):
    """What the server uses of `streamer` sessions (see streamer/session.py)."""

    id: str

    def push_audio(self, pcm: np.ndarray, sample_rate: int, channels: int = 1) -> None: ...
    def frames(self) -> Any: ...  # async iterator of StreamFrame
    async def aclose(self) -> None: ...


@dataclass
class Subscription:
    video: AvatarVideoTrack
    audio: LipAlignedAudioTrack | None

    def end(self) -> None:
        self.video.end()
        if self.audio is not None:
            self.audio.end()


class Upsample3x:
    """Streaming 16 -> 48 kHz: zero-stuffing and a 96-tap windowed-sinc low-pass (7.6 kHz) whose state carries
    over between chunks, so the output is continuous and exactly 3x the input. (n,) float32 -> (3n,) float32."""

    def __init__(self, taps: int = 96) -> None:
        self._h = (3.0 * firwin(taps, 7600, fs=AUDIO_RATE)).astype(np.float64)
        self._zi = np.zeros(taps - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(3 * len(x))
        stuffed[::3] = x
        y, self._zi = lfilter(self._h, 1.0, stuffed, zi=self._zi)
        return y.astype(np.float32)


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H'*3/2, W') planar yuv420p (BT.601, video range, as the encoders expect), cropping
    to even H', W' (4:2:0 needs them). OpenCV: ~0.3 ms for 450x450, 5x less than PyAV's swscale path."""
    h, w = image.shape[0] & ~1, image.shape[1] & ~1
    return cv2.cvtColor(np.ascontiguousarray(image[:h, :w]), cv2.COLOR_RGB2YUV_I420)


class AvatarBroadcast:
    """Reads `session.frames()` in one task (`run`) and feeds every subscription without waiting on any."""

    def __init__(self, session: StreamSession, fps: float, metrics: ServerMetrics | None = None) -> None:
        self.session = session
        self.fps = fps
        self.metrics = metrics
        self._subs: list[Subscription] = []
        self._upsampler = Upsample3x()
        # Primed with a few zeros: when 16000/fps is not whole (30 fps: 533 or 534 samples a frame), 3x the input
        # strays from the 48 kHz span by up to 1.5 samples either way; the priming keeps the FIFO from running dry.
        self._audio_fifo = np.zeros(6, np.float32)
        self.frame_rate = FrameRate()  # frames out, repeats included (the frame clock)
        self.picture_rate = FrameRate()  # new pictures out: what the eye sees move
        self.pictures = 0
        self._last_rgb: np.ndarray | None = None
        self._last_yuv: np.ndarray | None = None
        self._last_picture: np.ndarray | None = None
        self.frames = 0
        self.speech_frames = 0
        self.late_frames = 0
        self.last_speech_at: float | None = None  # monotonic time of the last frame with speech (session policy)
        self.last: dict[str, Any] = {}
        self.error: str | None = None
        self.ended = asyncio.Event()
        self.trace = SessionTrace()  # voice-to-lips stamps of this session (server/latency.py)

    # --- subscribers ----------------------------------------------------------------------------------------
    def subscribe(self, with_audio: bool) -> Subscription:
        sub = Subscription(AvatarVideoTrack(self.fps, trace=SendTrace(self.trace, self.fps)),
                           LipAlignedAudioTrack() if with_audio else None)
        if self.ended.is_set():
            sub.end()
        else:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        sub.end()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # --- the one reader of the session ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async for frame in self.session.frames():
                self._publish(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failing session ends its own peers only
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("session %s failed", getattr(self.session, "id", "?"))
        finally:
            failure = getattr(self.session, "failure", None)
            if failure and not self.error:
                self.error = str(failure)
            for sub in self._subs:
                sub.end()
            self._subs.clear()
            self.ended.set()

    def _frame_audio_48k(self, index: int, audio16: np.ndarray) -> tuple[int, np.ndarray]:
        """This frame's 16 kHz audio -> its exact span of 48 kHz samples [round(i*48k/fps), round((i+1)*48k/fps)).

        The 3x interpolator returns exactly 3 samples per input sample (a block resampler would return uneven
        blocks and force padding in the middle of speech), with a constant 1 ms delay."""
        start = int(round(index * AUDIO_RATE / self.fps))
        n = int(round((index + 1) * AUDIO_RATE / self.fps)) - start
        fifo = np.concatenate([self._audio_fifo, self._upsampler(np.asarray(audio16, np.float32).reshape(-1))])
        if len(fifo) < n:  # an underrun (audio spans not as the frame clock says): pad rather than fall behind
            fifo = np.concatenate([np.zeros(n - len(fifo), np.float32), fifo])
        chunk, self._audio_fifo = fifo[:n], fifo[n:]
        pcm = (np.clip(chunk, -1.0, 1.0) * 32767.0).astype(np.int16)
        return start, pcm

    def _publish(self, frame: Any) -> None:
        self.frames += 1
        self.trace.on_frame(frame)
        self.frame_rate.tick()
        if frame.image is not self._last_picture:
            self._last_picture = frame.image
            self.pictures += 1
            self.picture_rate.tick()
        self.speech_frames += bool(frame.speech)
        if frame.speech:
            self.last_speech_at = time.monotonic()
        self.late_frames += bool(frame.late)
        self.last = {"index": frame.index, "tier": str(getattr(frame.tier, "name", frame.tier)),
                     "speech": bool(frame.speech), "late": bool(frame.late),
                     "latency_ms": None if frame.latency_ms is None else round(float(frame.latency_ms), 1)}
        if self.metrics is not None:
            self.metrics.frame(frame.latency_ms, bool(frame.late))
        # Resample every frame (about 20 us) even with no listener, so the resampler's state is continuous when one
        # joins.
        audio = self._frame_audio_48k(frame.index, frame.audio)
        if not self._subs:
            return
        if frame.image is not self._last_rgb or self._last_yuv is None:  # a late frame repeats the same picture:
            self._last_rgb, self._last_yuv = frame.image, rgb_to_yuv420p(frame.image)  # convert it once
        yuv = self._last_yuv
        for sub in self._subs:
            sub.video.feed(frame.index, yuv)
            if sub.audio is not None:
                sub.audio.feed(*audio)

    def stats(self) -> dict[str, Any]:
        return {"fps": round(self.frame_rate.value(), 2), "picture_fps": round(self.picture_rate.value(), 2),
                "frames": self.frames, "pictures": self.pictures, "speech_frames": self.speech_frames,
                "late_frames": self.late_frames, "subscribers": self.subscribers, **self.last}
