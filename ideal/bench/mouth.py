"""Mouth opening measured on the frames a client actually received, with the project's own face tracker.

The end-to-end latency of `ideal bench --mode webrtc` must come from what the viewer sees, not from the
server's stats: each decoded frame is tracked (MediaPipe Face Mesh, as `ideal prepare` does) and its mouth
opening is the inner-lip gap over the face height (landmarks 13-14 over 10-152, the quantity
`avatar.expression.mouth_opening` is built on). The mouth "has opened" at the first frame after the speech
onset whose opening exceeds the silent frames' level by a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.expression import CHIN, FOREHEAD, LOWER_LIP_INNER, UPPER_LIP_INNER


def mouth_openings(images: list[np.ndarray]) -> np.ndarray:
    """(N,) inner-lip gap / face height per RGB uint8 frame (NaN where no face is found)."""
    from avatar.prepare.tracking import FaceTracker

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
    index: int | None  # first frame (in the given order) whose mouth has opened after `after`
    threshold: float
    baseline: float  # median opening of the silent frames
    tracked: int  # frames where a face was found


def mouth_onset(times: np.ndarray, openings: np.ndarray, silent_until: float, after: float,
                margin: float = 0.02, k: float = 4.0) -> MouthOnset:
    """First frame with time >= `after` whose opening exceeds the silent frames' (time < `silent_until`)
    median by max(margin, k * MAD-sigma). Openings are in face heights (a wide-open mouth is ~0.1-0.2)."""
    times = np.asarray(times, dtype=np.float64)
    openings = np.asarray(openings, dtype=np.float64)
    ok = ~np.isnan(openings)
    silent = openings[ok & (times < silent_until)]
    if silent.size < 3:
        return MouthOnset(None, float("nan"), float("nan"), int(ok.sum()))
    base = float(np.median(silent))
    sigma = 1.4826 * float(np.median(np.abs(silent - base)))
    threshold = base + max(margin, k * sigma)
    for i in np.nonzero(ok & (times >= after))[0]:
        if openings[i] > threshold:
            return MouthOnset(int(i), threshold, base, int(ok.sum()))
    return MouthOnset(None, threshold, base, int(ok.sum()))
