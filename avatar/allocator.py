"""Keep freed tensor memory in the process instead of handing it back to the kernel (glibc malloc tuning).

A rendered frame allocates and frees tens of MB of temporaries (a coarse field layer alone is 49k points x
64 channels = 12.5 MB). glibc serves blocks that large with mmap and returns them with munmap, so every frame
page-faults fresh, zeroed memory; with several threads at work the faults arrive in bursts. In the live
streamer this made one render in ten 2-3x slower than the median (fast tier p95 81 ms vs p50 35 ms; 189 of
513 frames late in a 20 s run); with the thresholds raised the same run had p95 37 ms and 9 late frames.
Equivalent to MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment, applied from inside.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (4 * 1024 * 1024 * sizeof(long))
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). False where the C library is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; allocator left as it was")
    _done = ok
    return ok
