"""Frames without a face: short gaps are filled by interpolation, long ones are an error naming the times."""

from __future__ import annotations

import numpy as np

from ideal.avatar.errors import InputError


def missing_runs(detected: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame ranges where `detected` (N,) bool is False."""
    d = np.concatenate([[True], np.asarray(detected, bool), [True]])
    edges = np.flatnonzero(d[1:] != d[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2])]


def format_ranges(runs: list[tuple[int, int]], fps: float, offset_s: float = 0.0, limit: int = 6) -> str:
    parts = [f"{offset_s + a / fps:.2f}-{offset_s + b / fps:.2f}s" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"and {len(runs) - limit} more")
    return ", ".join(parts)


def check_gaps(detected: np.ndarray, fps: float, max_gap_s: float, path: str, offset_s: float = 0.0) -> None:
    """Raise InputError when no frame has a face, or any run of faceless frames exceeds `max_gap_s`."""
    if not np.any(detected):
        raise InputError(f"{path}: no face found in any frame",
                         "pass a video of one person facing the camera")
    long_runs = [(a, b) for a, b in missing_runs(detected) if (b - a) / fps > max_gap_s]
    if long_runs:
        raise InputError(
            f"{path}: no face in {format_ranges(long_runs, fps, offset_s)} (gaps longer than {max_gap_s:g} s)",
            "cut those parts out (e.g. with --start/--duration) or raise --max-gap-s")


def interpolate_missing(values: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Fill frames where `detected` is False by linear interpolation in time (held at the ends).

    values: (N, ...) float array (NaN allowed where not detected); returns a filled float32 copy.
    """
    out = np.array(values, dtype=np.float32, copy=True)
    idx = np.flatnonzero(detected)
    if len(idx) == len(out):
        return out
    flat = out.reshape(len(out), -1)
    missing = np.flatnonzero(~np.asarray(detected, bool))
    src = flat[idx]
    # np.interp per column, vectorised by interpolating weights once.
    pos = np.searchsorted(idx, missing)
    lo = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    hi = idx[np.clip(pos, 0, len(idx) - 1)]
    w = np.where(hi == lo, 0.0, (missing - lo) / np.maximum(hi - lo, 1)).astype(np.float32)
    w = np.where(pos == 0, 1.0, np.where(pos == len(idx), 0.0, w)).astype(np.float32)
    lo_i = np.searchsorted(idx, lo)
    hi_i = np.searchsorted(idx, hi)
    flat[missing] = (1 - w)[:, None] * src[lo_i] + w[:, None] * src[hi_i]
    return out
