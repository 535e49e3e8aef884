"""Outgoing media: the avatar's video and the lip-aligned audio, as aiortc `MediaStreamTrack`s.

Each track owns its timestamps, derived from the streamer's frame index so that video and audio of the same
frame carry the same presentation time: video pts = index * 90000 / fps (time base 1/90000), audio pts = the
48 kHz sample index of the frame's first sample (time base 1/48000). A receiver (the browser) then plays the
sound with the lips that made it, whatever the network does, via the RTCP sender reports of both streams.

Tracks are fed by `server.broadcast.AvatarBroadcast`; a slow encoder (video) loses its oldest frames rather
than delaying the broadcaster or any other subscriber.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ideal.server.latency import SendTrace

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48_000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_PACKET = 960  # 20 ms at 48 kHz: one Opus packet
_END = None


def _put_dropping_oldest(queue: asyncio.Queue, item: object) -> bool:
    """Put without ever waiting; when full, drop the oldest item. Returns True when something was dropped."""
    dropped = False
    while queue.full():
        queue.get_nowait()
        dropped = True
    queue.put_nowait(item)
    return dropped


class _QueuedTrack(MediaStreamTrack):
    """A track fed by a bounded queue that never blocks the feeder (the oldest item goes when it is full) and
    ends when `end()` is queued."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.sent = 0
        self.dropped = 0

    def end(self) -> None:
        """No more items (the session ended): the next `recv` ends the track."""
        if self.readyState == "live":
            _put_dropping_oldest(self._queue, _END)

    async def _next_item(self) -> tuple[Any, Any]:
        """The next queued item; raises MediaStreamError (stopping the track) once it has ended."""
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is _END:
            self.stop()
            raise MediaStreamError
        return item


class AvatarVideoTrack(_QueuedTrack):
    """The avatar's composited frames (with the "synthetic" mark the streamer draws) as a video track."""

    kind = "video"

    def __init__(self, fps: float, maxsize: int = 3, trace: SendTrace | None = None) -> None:
        super().__init__(maxsize)
        self.fps = fps
        self.trace = trace  # when the encoder takes each frame (the voice-to-lips trace)
        # latency added before the encoder, frames/s unchanged: checks that the trace sees a delay where it is made
        self.added_delay_s = 0.0

    def feed(self, index: int, yuv: np.ndarray) -> None:
        """Queue frame `index`; `yuv` is (H*3/2, W) uint8 planar yuv420p, shared read-only with other tracks."""
        if self.added_delay_s > 0:
            asyncio.get_running_loop().call_later(self.added_delay_s, self._queue_frame, index, yuv)
        else:
            self._queue_frame(index, yuv)

    def _queue_frame(self, index: int, yuv: np.ndarray) -> None:
        if self.readyState == "live" and _put_dropping_oldest(self._queue, (index, yuv)):
            self.dropped += 1

    async def recv(self) -> av.VideoFrame:
        index, yuv = await self._next_item()
        if self.trace is not None:
            self.trace.on_pulled(index, time.time())
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")  # a copy: encoders may touch the frame
        frame.pts = int(round(index * VIDEO_CLOCK_RATE / self.fps))
        frame.time_base = VIDEO_TIME_BASE
        self.sent += 1
        return frame


class LipAlignedAudioTrack(_QueuedTrack):
    """The speaker's own voice, delayed by the streamer to the frame it animates, as 20 ms Opus-ready packets.

    Packets are released no earlier than their presentation time on a wall-clock schedule anchored to the
    earliest frame arrival, so the two 20 ms halves of a 40 ms video frame leave 20 ms apart and the sender
    reports of audio and video map the same pts to the same wall time.

    Nor much later: a consumer slower than real time (aiortc's sender loop on a CPU-starved process pulls one
    packet per `recv`, each with an executor round trip) would otherwise drain the queue in order while it stays
    full, so the voice fell further and further behind its picture (100 packets at ~15/s: ~7 s) and a listener
    heard the silence before the speech long after the lips moved. A packet more than `max_lag_s` past its
    presentation time is skipped while a newer one is queued: the voice keeps its lips and its latency, and an
    overloaded server gives gaps in the sound rather than an ever-growing delay (the video track likewise keeps
    only its newest frames). `max_lag_s=None` keeps every packet.
    """

    kind = "audio"

    def __init__(self, maxsize: int = 100, max_lag_s: float | None = 0.25) -> None:
        super().__init__(maxsize)
        self.max_lag_s = max_lag_s
        self.stale = 0  # packets skipped for being more than max_lag_s late (the consumer could not keep up)
        self._anchor: float | None = None  # monotonic time of pts 0
        self._carry = np.zeros(0, np.int16)  # samples short of a whole packet, continued by the next frame
        self._carry_pts = 0

    def feed(self, pts_samples: int, pcm: np.ndarray) -> None:
        """Queue one video frame's audio: `pcm` (n,) int16 mono 48 kHz starting at sample `pts_samples`.

        Frames need not hold whole packets (48000/fps samples each); the remainder waits for the next frame. A
        gap in `pts_samples` (a frame that never came) drops the remainder instead of gluing across the gap."""
        if self.readyState != "live":
            return
        if len(self._carry) and pts_samples == self._carry_pts + len(self._carry):
            pts_samples, pcm = self._carry_pts, np.concatenate([self._carry, pcm])
        now = time.monotonic()
        arrival_anchor = now - pts_samples / AUDIO_RATE
        if self._anchor is None or arrival_anchor < self._anchor or arrival_anchor - self._anchor > 0.5:
            # Earliest arrival wins; a stall longer than 0.5 s re-anchors rather than bursting forever after.
            self._anchor = arrival_anchor
        whole = len(pcm) - len(pcm) % AUDIO_PACKET
        for start in range(0, whole, AUDIO_PACKET):
            if _put_dropping_oldest(self._queue, (pts_samples + start, pcm[start:start + AUDIO_PACKET])):
                self.dropped += 1
        self._carry, self._carry_pts = pcm[whole:], pts_samples + whole

    async def recv(self) -> av.AudioFrame:
        pts, pcm = await self._next_item()
        while self._is_stale(pts) and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:  # ending: send what we hold, the next recv ends the track
                self._queue.put_nowait(item)
                break
            self.stale += 1
            pts, pcm = item
        if self._anchor is not None:
            wait = self._anchor + pts / AUDIO_RATE - time.monotonic()
            if 0 < wait < 0.5:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm))
        frame.planes[0].update(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        self.sent += 1
        return frame

    def _is_stale(self, pts: int) -> bool:
        """Whether the packet at `pts` is more than `max_lag_s` behind its place on the wall-clock schedule."""
        if self.max_lag_s is None or self._anchor is None:
            return False
        return time.monotonic() - (self._anchor + pts / AUDIO_RATE) > self.max_lag_s
