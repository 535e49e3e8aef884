"""What a session measures about itself, and the small helpers benchmarks reuse (percentiles, RSS).

Per frame: stage timings (features, expression, queue wait, model, compose), the tier used, whether it was
late (the last frame repeated), and the latency from the wall-clock arrival of the audio chunk holding the
frame's first sample to the frame's emission (lookahead wait included). A session keeps the last
`window` frames for percentiles, so memory stays flat however long the call.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


def percentiles(values: Iterable[float | None], qs: tuple[int, ...] = (50, 95, 99),
                digits: int | None = None) -> dict[str, float | None]:
    """{'p50': ..., 'p95': ..., 'p99': ...} of the finite values (None when there are none), rounded to `digits`
    decimals when given. The one percentile summary of the project: sessions, the server and `ideal bench`."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not arr.size:
        return {f"p{q}": None for q in qs}
    values_at = (float(np.percentile(arr, q)) for q in qs)
    return {f"p{q}": (v if digits is None else round(v, digits)) for q, v in zip(qs, values_at)}


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class FrameRecord:
    index: int
    tier: str
    late: bool
    speech: bool
    latency_ms: float | None
    timings_ms: dict[str, float]
    emitted_at: float


@dataclass
class SessionStats:
    """A snapshot of one session (JSON-ready through `to_dict`)."""

    session_id: str
    state: str  # "running" | "idle" | "closed" | "failed"
    failure: str | None
    frames: int
    late_frames: int
    dropped_frames: int  # emitted but overwritten before the consumer took them
    speech_frames: int
    tiers: dict[str, int]
    tier: str  # the scheduler's current base tier
    fps: float
    lookahead_ms: float
    delay_ms: float  # the fixed playout delay: frame + lookahead + jitter + render budget
    latency_ms: dict[str, float | None]  # p50/p95/p99 over the recent window
    stage_ms: dict[str, dict[str, float | None]]  # stage -> {mean, p95}
    queues: dict[str, float]  # render_queue, frame_queue, audio_ahead_ms
    audio: dict[str, float]  # received_ms, filled_ms (silence for missing audio), dropped_ms, resampler_ms
    frontend_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


class StatsRecorder:
    """Accumulates per-frame records of one session (bounded window) and totals."""

    def __init__(self, window: int = 1500) -> None:
        self.recent: deque[FrameRecord] = deque(maxlen=window)
        self.frames = 0
        self.late = 0
        self.dropped = 0
        self.speech = 0
        self.tiers: Counter[str] = Counter()

    def record(self, rec: FrameRecord) -> None:
        self.recent.append(rec)
        self.frames += 1
        self.late += int(rec.late)
        self.speech += int(rec.speech)
        self.tiers[rec.tier] += 1

    def latency(self) -> dict[str, float | None]:
        return percentiles(r.latency_ms for r in self.recent if not r.late)

    def stages(self) -> dict[str, dict[str, float | None]]:
        names = sorted({k for r in self.recent for k in r.timings_ms})
        out = {}
        for name in names:
            vals = [r.timings_ms[name] for r in self.recent if name in r.timings_ms]
            out[name] = {"mean": float(np.mean(vals)) if vals else None, **percentiles(vals, (95,))}
        return out
