"""A/V offset: ask the estimator of avatar.mouth.offset how late the audio is, or take a forced value."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ideal.avatar.errors import IdealError
from ideal.avatar.mouth.offset import WARN_MS, estimate_offset

log = logging.getLogger(__name__)

# The estimator's own guidance: below r ~ 0.2 its peak is unreliable. Shifting the audio by a wrong offset
# teaches the model a wrong lip-sync, so weak estimates are recorded but not applied.
MIN_CONFIDENCE = 0.3


@dataclass(frozen=True)
class OffsetDecision:
    offset_ms: float  # the offset applied; positive: audio late vs video
    method: str
    confidence: float | None = None
    estimated_ms: float | None = None  # what the estimator said (also when it was not applied)


def decide_offset(audio_16k: np.ndarray, mouth_open: np.ndarray, fps: float, forced_ms: float | None = None,
                  skip: bool = False, source: str = "", min_confidence: float = MIN_CONFIDENCE,
                  valid: np.ndarray | None = None) -> OffsetDecision:
    """The offset to correct. `forced_ms` wins, `skip` records 0 ("skipped"); otherwise the estimator of
    avatar.mouth.offset ("failed" and 0 when it finds nothing to go by). An estimate with confidence below
    `min_confidence` is recorded in `estimated_ms` but not applied (method "<method>_low_confidence")."""
    if forced_ms is not None:
        d = OffsetDecision(float(forced_ms), "forced")
    elif skip:
        d = OffsetDecision(0.0, "skipped")
    else:
        try:
            # interpolated frames carry no evidence of sync
            est = estimate_offset(audio_16k, mouth_open, fps, valid=valid)
        except IdealError as exc:  # silent audio, a mouth that never moves: nothing to correct against
            log.warning("%s: no A/V offset estimate (%s); recorded as 0", source, exc)
            return OffsetDecision(0.0, "failed")
        conf = float(est.confidence)
        if conf < min_confidence:
            log.warning("%s: A/V offset estimate %+.0f ms has low confidence (r=%.2f < %.2f): not applied; "
                        "pass --av-offset-ms to force a value", source, est.offset_ms, conf, min_confidence)
            return OffsetDecision(0.0, f"{est.method}_low_confidence", conf, float(est.offset_ms))
        d = OffsetDecision(float(est.offset_ms), est.method, conf, float(est.offset_ms))
    if abs(d.offset_ms) > WARN_MS:
        log.warning("%s: audio is %+.0f ms out of sync with the video (%s); corrected in the dataset",
                    source, d.offset_ms, d.method)
    return d
