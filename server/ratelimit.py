"""Per-client limits on `POST /offer`: a client may hold session slots with offers that never connect only so
often.

Each client key (its IP address, and the token it shows) has a bucket of `burst` offers that refills one per
`refill_s` seconds. An offer takes one from each of its keys' buckets and gives it back once its peer connects,
so a browser that joins, rejoins and watches a whole room is never limited, while a client that only offers (to
keep the one slot busy) is held to one offer per `refill_s` after its burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Full buckets carry no information: they are forgotten once this many clients are tracked.
_PRUNE_ABOVE = 1024


@dataclass
class _Bucket:
    level: float
    at: float


class OfferLimiter:
    def __init__(self, burst: int, refill_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _level(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            b.level = min(float(self.burst), b.level + (now - b.at) / self.refill_s)
            b.at = now
        return b

    def take(self, keys: Sequence[str]) -> float | None:
        """Take one offer from every key's bucket; when one is empty take none and return the seconds until it
        has one again (None: taken)."""
        now = self._clock()
        if len(self._buckets) > _PRUNE_ABOVE:
            for key in [k for k, b in self._buckets.items() if b.level + (now - b.at) / self.refill_s >= self.burst]:
                del self._buckets[key]
        buckets = [self._level(k, now) for k in keys]
        short = [b for b in buckets if b.level < 1.0]
        if short:
            return max((1.0 - b.level) * self.refill_s for b in short)
        for b in buckets:
            b.level -= 1.0
        return None

    def give_back(self, keys: Sequence[str]) -> None:
        """The offer connected (or was refused before it held anything): it does not count."""
        now = self._clock()
        for key in keys:
            b = self._level(key, now)
            b.level = min(float(self.burst), b.level + 1.0)
