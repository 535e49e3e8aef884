"""Mouth opening measured on the frames a client actually received, with the project's own face tracker.

The end-to-end latency of `ideal bench --mode webrtc` must come from what the viewer sees, not from the
server's stats: each decoded frame is tracked (MediaPipe Face Mesh, as `ideal prepare` does) and its mouth
opening is the inner-lip gap over the face height (landmarks 13-14 over 10-152, the quantity
`avatar.expression.mouth_opening` is built on). The mouth "has opened" at the first frame after the speech
onset whose opening departs from the silent frames' level by a margin. Departures in both directions count
(`direction` says which came first): an avatar whose resting mouth renders slightly parted may first *close*
its lips on a bilabial, and that is just as much the lips' first response to the speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ideal.avatar.evaluation.face_metrics import pearson
from ideal.avatar.expression import CHIN, FOREHEAD, LOWER_LIP_INNER, UPPER_LIP_INNER


def mouth_openings(images: list[np.ndarray]) -> np.ndarray:
    """(N,) inner-lip gap / face height per RGB uint8 frame (NaN where no face is found)."""
    from ideal.avatar.prepare.tracking import FaceTracker

    if not images:
        return np.zeros(0, dtype=np.float32)
    h, w = images[0].shape[:2]
    tracker = FaceTracker(w, h)
    out = np.full(len(images), np.nan, dtype=np.float32)
    try:
        for i, image in enumerate(images):
            lm = tracker.process(np.ascontiguousarray(image))
            if lm is not None:
                face = float(np.linalg.norm(lm[FOREHEAD, :2] - lm[CHIN, :2]))
                out[i] = float(np.linalg.norm(lm[UPPER_LIP_INNER, :2] - lm[LOWER_LIP_INNER, :2])) / max(face, 1e-6)
    finally:
        tracker.close()
    return out


@dataclass
class MouthOnset:
    index: int | None  # first frame (in the given order) whose mouth moved away from rest after `after`
    threshold: float  # the departure from the baseline that counts
    baseline: float  # median opening of the silent frames
    tracked: int  # frames where a face was found
    direction: str | None = None  # "opened" | "closed"


def mouth_onset(times: np.ndarray, openings: np.ndarray, silent_until: float, after: float,
                margin: float = 0.015, k: float = 4.0, silent_span: float = 2.0, persist: int = 2) -> MouthOnset:
    """First frame with time >= `after` from which the opening stays away from the silent frames' median (the
    `silent_span` seconds before `silent_until`) for `persist` frames, by more than the threshold
    max(margin, k * MAD-sigma, 1.5 x the largest excursion seen in that silence): idle motion, blinks and
    tracker jitter move the lips a little while nobody speaks, and must not count. Openings are in face heights
    (speech spans ~0-0.1)."""
    times = np.asarray(times, dtype=np.float64)
    openings = np.asarray(openings, dtype=np.float64)
    ok = ~np.isnan(openings)
    silent = openings[ok & (times < silent_until) & (times >= silent_until - silent_span)]
    if silent.size < 3:
        return MouthOnset(None, float("nan"), float("nan"), int(ok.sum()))
    base = float(np.median(silent))
    sigma = 1.4826 * float(np.median(np.abs(silent - base)))
    threshold = max(margin, k * sigma, 1.5 * float(np.abs(silent - base).max()))
    idx = np.nonzero(ok & (times >= after))[0]
    away = np.abs(openings[idx] - base) > threshold
    for j in range(len(idx) - persist + 1):
        if away[j:j + persist].all():
            i = int(idx[j])
            return MouthOnset(i, threshold, base, int(ok.sum()), "opened" if openings[i] > base else "closed")
    return MouthOnset(None, threshold, base, int(ok.sum()))


def av_lag_ms(video_t: np.ndarray, openings: np.ndarray, audio_t: np.ndarray, audio_level: np.ndarray,
              start: float, stop: float, max_lag_ms: float = 400.0,
              step_ms: float = 10.0) -> tuple[float, float] | None:
    """Lip-sync offset as the viewer gets it: the lag (ms, + = picture after sound) that best aligns the decoded
    mouth opening with the received sound's level over [start, stop], by Pearson r on a common 10 ms grid
    (both series linearly interpolated at their arrival times). Returns (lag, r at that lag), or None without
    enough of either. Unlike a single onset it uses every syllable, so it measures sync, not detection delay."""
    ok = np.isfinite(openings)
    vt, vo = np.asarray(video_t, np.float64)[ok], np.asarray(openings, np.float64)[ok]
    at, al = np.asarray(audio_t, np.float64), np.asarray(audio_level, np.float64)
    if len(vt) < 10 or len(at) < 20:
        return None
    grid = np.arange(start, stop, step_ms / 1000.0)
    loudness = np.interp(grid, at, np.log10(al + 1e-4))
    best: tuple[float, float] | None = None
    for lag in np.arange(-max_lag_ms, max_lag_ms + step_ms / 2, step_ms):
        mouth = np.interp(grid + lag / 1000.0, vt, vo)
        if mouth.std() < 1e-9 or loudness.std() < 1e-9:
            continue
        r = pearson(mouth, loudness)
        if best is None or r > best[1]:
            best = (float(lag), r)
    return best
