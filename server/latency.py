"""Voice to lips, measured hop by hop on the media itself.

For a frame the avatar shows, *voice to lips* is the time from the browser capturing the sound that frame's mouth
makes (the sample at the frame's centre on the session's audio timeline) to the browser putting that frame on the
screen. Each hop in between is timestamped where it happens, in one clock, the server's wall clock (`time.time()`):

| stamp | where | how |
| --- | --- | --- |
| captured | browser, microphone | the sample's RTP timestamp mapped to the sender's clock by its RTCP sender reports |
| arrived | server, socket | arrival of the RTP packet holding the sample (`ReceiveHooks` on the audio receiver) |
| delivered | server, decoded audio handed to the session | the microphone pump, per decoded 20 ms frame |
| audio_complete | streamer | arrival of the last sample the frame needs (its end + the mouth model's lookahead) |
| job | streamer | features and the expression are computed |
| render_start / render_end | render queue | the model starts / the composited picture is ready |
| emitted | streamer | the frame leaves at its deadline (the jitter allowance and the render budget end there) |
| pulled | aiortc video sender | the encoder takes the frame |
| sent | aiortc video sender | the encoded frame's RTP packets are on the socket |
| received / presented / displayed | browser | `requestVideoFrameCallback`'s `receiveTime`, `presentationTime`, |
| | | `expectedDisplayTime`, posted by the page (web/latency.js) |

Browser times are moved to the server's clock by the page's own offset estimate (the midpoint of a request's
round trip, `offset_s` in its post); the sender reports' times are the microphone's browser's wall clock and get
that page's offset (a viewer's table uses the publisher's). The hops are the differences of consecutive stamps,
so they add up to the total exactly; what makes the figures trustworthy is that each stamp is taken on the media,
and `ideal bench --mode browser` checks the total against an independent one (the lag that best aligns the
microphone's loudness with the shown mouth).

A frame that went out late (it repeats an older picture) is left out of the table and counted as a repeat.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ideal.streamer.stats import percentiles

NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
RTP_AUDIO_RATE = 48_000  # Opus RTP clock
SESSION_RATE = 16_000  # the streamer's audio timeline
STAMPS = ("captured", "arrived", "delivered", "audio_complete", "job", "render_start", "render_end", "emitted",
          "pulled", "sent", "received", "presented", "displayed")
HOP_LABELS = {
    "arrived": "mic capture -> server (Opus packet + network)",
    "delivered": "server receive buffer + decode",
    "audio_complete": "rest of the frame + lookahead audio",
    "job": "features + expression",
    "render_start": "render queue",
    "render_end": "render + composite",
    "emitted": "held to the frame's deadline",
    "pulled": "to the encoder",
    "sent": "encode + send",
    "received": "network to the browser",
    "presented": "browser jitter buffer + decode",
    "displayed": "to the screen",
}
_KEEP_FRAMES = 1500  # 60 s at 25 fps
LEVEL_BLOCK = 160  # 10 ms at 16 kHz
_KEEP_PACKETS = 1000
_MATCH_WINDOW_S = 0.035  # a frame reaches the browser within this of being sent (loopback and LAN)


def _signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= (1 << 31) else x


class MicTimeline:
    """Where and when each sample of one microphone was: captured (browser), arrived and delivered (server)."""

    def __init__(self) -> None:
        self._packets: OrderedDict[int, float] = OrderedDict()  # RTP timestamp -> arrival wall time
        self._first_rtp: int | None = None
        self._report: tuple[float, int] | None = None  # (sender wall time, RTP timestamp) of the last report
        # decoded frames as pushed to the session: (first input sample, RTP offset, samples, rate)
        self._frames: deque[tuple[int, int, int, int]] = deque(maxlen=_KEEP_PACKETS)
        # pushes: (session samples written after it, input samples pushed after it, rate, resampler lag s, wall)
        self._pushes: deque[tuple[int, int, int, float, float]] = deque(maxlen=_KEEP_PACKETS)
        self._pushed = 0  # input samples pushed so far

    def on_packet(self, rtp_timestamp: int, wall: float) -> None:
        if self._first_rtp is None:
            self._first_rtp = rtp_timestamp
        self._packets[rtp_timestamp] = wall
        while len(self._packets) > _KEEP_PACKETS:
            self._packets.popitem(last=False)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """An RTCP sender report: the sender's wall clock (64-bit NTP) at this RTP timestamp."""
        self._report = (ntp_timestamp / 2**32 - NTP_EPOCH_OFFSET_S, rtp_timestamp)

    def on_pushed(self, pts: int, samples: int, rate: int, wall: float, session_written: int,
                  holdback_s: float) -> None:
        """A decoded frame was pushed to the session: `pts` is aiortc's (RTP timestamp - the first one);
        `session_written` the session's timeline length (16 kHz) after the push, `holdback_s` its resampler's
        lag (the session's timeline also holds filled silence and may drop a burst: this maps through both)."""
        self._frames.append((self._pushed, pts, samples, rate))
        self._pushed += samples
        self._pushes.append((session_written, self._pushed, rate, holdback_s, wall))

    def sample(self, session_sample: int, browser_offset_s: float) -> dict[str, float] | None:
        """captured / arrived / delivered wall times of the session's 16 kHz sample `session_sample`."""
        if self._first_rtp is None:
            return None
        push = None
        for i in range(len(self._pushes) - 1, -1, -1):
            if self._pushes[i][0] <= session_sample:
                if i + 1 < len(self._pushes):
                    push = self._pushes[i + 1]
                break
        if push is None:
            return None
        written, pushed, rate, holdback_s, wall = push
        out = {"delivered": wall}
        position = pushed - (written - session_sample) * rate / SESSION_RATE - holdback_s * rate  # input sample
        for first, pts, n, frame_rate in reversed(self._frames):
            if first <= position < first + n:
                packet_rtp = (self._first_rtp + pts) & 0xFFFFFFFF
                arrived = self._packets.get(packet_rtp)
                if arrived is not None:
                    out["arrived"] = arrived
                if self._report is not None:
                    sr_wall, sr_rtp = self._report
                    sample_rtp = packet_rtp + int((position - first) * RTP_AUDIO_RATE / frame_rate)
                    out["captured"] = sr_wall + _signed32(sample_rtp - sr_rtp) / RTP_AUDIO_RATE + browser_offset_s
                break
            if first + n <= position:
                break
        return out


@dataclass
class _FrameStamps:
    index: int
    late: bool
    mouth_sample: int | None
    stamps: dict[str, float] = field(default_factory=dict)
    mouth_open: float | None = None  # the commanded mouth opening (the model's output for this frame)
    levels: np.ndarray | None = None  # RMS of the frame's audio in 10 ms blocks (the model's lead over the sound)


class SessionTrace:
    """The server's half for one streamer session: its microphone and the stamps of the frames it emitted."""

    def __init__(self) -> None:
        self.mic = MicTimeline()
        self._frames: OrderedDict[int, _FrameStamps] = OrderedDict()
        self._clock_to_wall = time.time() - time.monotonic()  # the streamer's clock is monotonic
        self.browser_offset_s = 0.0  # server clock - the clock of the microphone's browser (its page's estimate)

    def on_frame(self, frame: Any) -> None:
        """A `StreamFrame` left the session (its `trace` holds streamer clock times)."""
        stamps = {k: v + self._clock_to_wall for k, v in (getattr(frame, "trace", None) or {}).items()}
        audio = np.asarray(frame.audio, np.float32)
        blocks = audio[: len(audio) // LEVEL_BLOCK * LEVEL_BLOCK].reshape(-1, LEVEL_BLOCK)
        self._frames[frame.index] = _FrameStamps(frame.index, bool(frame.late), getattr(frame, "mouth_sample", None),
                                                 stamps, getattr(frame, "mouth_open", None),
                                                 np.sqrt((blocks ** 2).mean(axis=1)))
        while len(self._frames) > _KEEP_FRAMES:
            self._frames.popitem(last=False)

    def frame(self, index: int) -> _FrameStamps | None:
        return self._frames.get(index)

    def frames(self) -> list[_FrameStamps]:
        return list(self._frames.values())


class SendTrace:
    """One viewer's half: when its encoder took and sent each frame, and what its page displayed when."""

    def __init__(self, session: SessionTrace, fps: float) -> None:
        self.session = session
        self.fps = fps
        self._pulled: OrderedDict[int, float] = OrderedDict()
        self._sent: OrderedDict[int, float] = OrderedDict()  # frame index -> wall time its packets left
        self._shown: deque[tuple[int, dict[str, float]]] = deque(maxlen=_KEEP_FRAMES)  # (RTP timestamp, times)
        self._origin: int | None = None  # the sender's random RTP timestamp origin, learnt from the page's reports
        self.browser_offset_s = 0.0

    def _pts(self, index: int) -> int:
        return int(round(index * 90_000 / self.fps))

    def on_pulled(self, index: int, wall: float) -> None:
        self._pulled[index] = wall
        while len(self._pulled) > _KEEP_FRAMES:
            self._pulled.popitem(last=False)

    def on_sent(self, pts_90k: int, wall: float) -> None:
        index = int(round(pts_90k * self.fps / 90_000))
        self._sent[index] = wall
        while len(self._sent) > _KEEP_FRAMES:
            self._sent.popitem(last=False)

    def on_shown(self, frames: list[dict[str, float]], browser_offset_s: float) -> None:
        """Frames the page displayed: {rtp, received, presented, displayed} in the page's wall clock (s)."""
        self.browser_offset_s = browser_offset_s
        for f in frames:
            self._shown.append((int(f["rtp"]) & 0xFFFFFFFF,
                                {k: float(f[k]) + browser_offset_s for k in ("received", "presented", "displayed")}))
        if self._origin is None:
            self._origin = self._learn_origin()

    def _learn_origin(self) -> int | None:
        """The RTP origin that pairs the page's frames with the frames sent just before they arrived."""
        votes: dict[int, int] = {}
        sent = list(self._sent.items())
        for rtp, shown in self._shown:
            for index, wall in sent:
                if 0.0 <= shown["received"] - wall < _MATCH_WINDOW_S:
                    origin = (rtp - self._pts(index)) & 0xFFFFFFFF
                    votes[origin] = votes.get(origin, 0) + 1
        if not votes:
            return None
        origin, count = max(votes.items(), key=lambda kv: kv[1])
        return origin if count >= 5 else None

    def frames(self) -> list[dict[str, Any]]:
        """Every displayed frame with all the stamps that are known for it, oldest first."""
        if self._origin is None:
            return []
        by_pts = {self._pts(i): i for i in self._sent}
        out = []
        for rtp, shown in self._shown:
            index = by_pts.get((rtp - self._origin) & 0xFFFFFFFF)
            if index is None:
                continue
            rec = self.session.frame(index)
            if rec is None:
                continue
            stamps = dict(rec.stamps)
            if rec.mouth_sample is not None:
                stamps.update(self.session.mic.sample(rec.mouth_sample, self.session.browser_offset_s) or {})
            if index in self._pulled:
                stamps["pulled"] = self._pulled[index]
            stamps["sent"] = self._sent[index]
            stamps.update({k: shown[k] for k in ("received", "presented", "displayed")})
            out.append({"index": index, "late": rec.late, "stamps": stamps})
        return out


def _pct(values: list[float]) -> dict[str, float | None]:
    return {**percentiles(values, (50, 95), digits=1), "mean": round(float(np.mean(values)), 1) if values else None}


def hop_table(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-hop and total p50/p95/mean (ms) over the fresh frames that carry every stamp; repeats counted apart.

    `frames` as `SendTrace.frames()` gives them (or recorded by the bench): each with `late` and `stamps`."""
    complete = [f for f in frames if not f["late"] and all(k in f["stamps"] for k in STAMPS)]
    hops: list[dict[str, Any]] = []
    for prev, stamp in zip(STAMPS, STAMPS[1:]):
        values = [1000.0 * (f["stamps"][stamp] - f["stamps"][prev]) for f in complete]
        hops.append({"hop": stamp, "label": HOP_LABELS[stamp], **_pct(values)})
    totals = [1000.0 * (f["stamps"]["displayed"] - f["stamps"]["captured"]) for f in complete]
    shown = [f for f in frames if "displayed" in f["stamps"]]
    displayed = sorted(f["stamps"]["displayed"] for f in shown)
    span = displayed[-1] - displayed[0] if len(displayed) > 1 else 0.0
    fresh = [f for f in shown if not f["late"]]
    return {"frames": len(complete), "shown": len(shown),
            "repeats": round(1.0 - len(fresh) / len(shown), 4) if shown else None,
            "fresh_fps": round((len(fresh) - 1) / span, 2) if span > 0 and fresh else None,
            "hops": hops, "total_ms": _pct(totals),
            "sum_of_hop_means_ms": round(sum(h["mean"] for h in hops), 1) if complete else None,
            "median_display_interval_ms": round(1000.0 * statistics.median(np.diff(displayed)), 1)
            if len(displayed) > 2 else None}
