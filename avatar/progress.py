"""Progress for long work: a live bar on a terminal, a log line per interval everywhere else.

A tqdm bar redraws itself with carriage returns many times a second; written to a file or a CI log that is
hundreds of partial lines. When stderr is not a terminal the same calls log one plain line through `logging`
every `LOG_INTERVAL_S` seconds (and one at the end), so every progress site stays a single `progress_bar(...)`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
log = logging.getLogger("ideal.progress")
_now = time.monotonic  # (a seam for tests)


class _Discard:
    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LoggedProgress(tqdm):
    """tqdm's counting, rates and ETA, reported as log lines at most every `mininterval` seconds, and once at the
    end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file"] = _Discard()
        kwargs["mininterval"] = kwargs.get("mininterval", LOG_INTERVAL_S)
        kwargs["maxinterval"] = max(kwargs["mininterval"], kwargs.get("maxinterval", 0.0))
        kwargs.pop("dynamic_ncols", None)
        self._closing, self._last_log, self._logged_n = False, _now(), 0
        super().__init__(*args, **kwargs)
        self.bar_format = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, "
                           "{rate_fmt}]{postfix}" if self.total
                           else "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}]{postfix}")

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # tqdm limits update()'s calls to mininterval, but set_postfix() and close() display at once
        now = _now()
        due = now - self._last_log >= self.mininterval or (self._closing and self.n != self._logged_n)
        if self.n > 0 and due:
            log.info("%s", str(self))
            self._last_log, self._logged_n = now, self.n
        return True

    def close(self) -> None:
        self._closing = True
        super().close()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """`tqdm(...)` on a terminal, `LoggedProgress(...)` (same arguments) when stderr is redirected."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(*args, **kwargs)
    return LoggedProgress(*args, **kwargs)
