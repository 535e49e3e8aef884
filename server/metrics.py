"""Server-wide counters and latency percentiles for `GET /metrics` (JSON, or Prometheus text)."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FrameRate:
    """Frames per second over a sliding window of arrival times (what a viewer actually gets)."""

    window_s: float = 2.0
    _times: deque = field(default_factory=deque)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def value(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)


def percentiles(values: "deque[float] | list[float]", qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs}
    arr = np.fromiter(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


class ServerMetrics:
    """Counters since start plus the latency (audio in -> frame out, from the streamer) of the last frames."""

    def __init__(self, window: int = 2000) -> None:
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # by HTTP status
        self.latency_ms: deque[float] = deque(maxlen=window)
        self.late_frames = 0
        self.frames = 0

    def frame(self, latency_ms: float | None, late: bool) -> None:
        self.frames += 1
        if late:
            self.late_frames += 1
        if latency_ms is not None:
            self.latency_ms.append(float(latency_ms))

    def snapshot(self, live: dict[str, Any]) -> dict[str, Any]:
        """`live` holds what the peer manager knows now (sessions, viewers, per-session fps)."""
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            **live,
            "frames": self.frames,
            "late_frames": self.late_frames,
            "latency_ms": percentiles(self.latency_ms),
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
        }


def to_prometheus(snapshot: dict[str, Any]) -> str:
    """The numeric leaves of a snapshot as Prometheus text exposition (`ideal_serve_*`)."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}_{k}", v)
        elif isinstance(value, bool):
            lines.append(f"{prefix} {int(value)}")
        elif isinstance(value, (int, float)):
            lines.append(f"{prefix} {value}")

    for key, value in snapshot.items():
        if key == "sessions_detail":
            continue
        walk(f"ideal_serve_{key}", value)
    return "\n".join(lines) + "\n"
