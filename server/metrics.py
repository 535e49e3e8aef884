"""Server-wide counters and latency percentiles for `GET /metrics` (JSON, or Prometheus text)."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ideal.streamer.stats import percentiles

LATENCY_PERCENTILES = (50, 90, 99)


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
            "latency_ms": percentiles(self.latency_ms, LATENCY_PERCENTILES, digits=2),
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
        }


class _SnapshotCollector(Collector):
    """Every numeric leaf of a snapshot as a gauge named by its path (`latency_ms.p50` ->
    `ideal_serve_latency_ms_p50`); leaves without a value yet (None) are left out, and so is the per-session
    detail, whose list has no stable names."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def walk(path: list[str], value: Any) -> Iterator[GaugeMetricFamily]:
            if isinstance(value, dict):
                for k, v in value.items():
                    yield from walk([*path, str(k)], v)
            elif isinstance(value, (bool, int, float)):
                yield GaugeMetricFamily("_".join(["ideal_serve", *path]), f"GET /metrics {'.'.join(path)}",
                                        value=float(value))

        for key, value in self.snapshot.items():
            if key != "sessions_detail":
                yield from walk([key], value)


def to_prometheus(snapshot: dict[str, Any]) -> bytes:
    """The snapshot in the Prometheus text exposition format (serve it as `prometheus_client.CONTENT_TYPE_LATEST`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
