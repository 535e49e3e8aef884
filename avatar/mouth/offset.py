"""A/V offset between a clip's audio and its mouth motion.

The audio-implied mouth opening (the shipped mouth model run on the audio; without a model, the audio's
speech-band energy envelope) is cross-correlated with the tracked mouth opening over +-500 ms at 10 ms
resolution. Both signals are high-passed first (a 1 s moving average removed) so slow drifts of the tracker
or the recording level do not bias the peak.

Convention: `offset_ms > 0` means the audio is LATE against the video (the sound of frame i is heard
offset_ms after frame i is shown); correcting it means dropping `offset_ms` from the start of the audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import AvatarError, InputError

log = logging.getLogger(__name__)

MAX_LAG_MS = 500.0
WARN_MS = 80.0
HOP_MS = 10.0
# The energy envelope peaks later than the mouth opens (sound follows the articulation): its lag at true
# sync, measured on the shared clips after model-based alignment (docs/mouth.md), is subtracted.
ENERGY_LAG_BIAS_MS = 0.0
MIN_SECONDS = 2.0


@dataclass
class OffsetEstimate:
    offset_ms: float  # > 0: audio late relative to video
    confidence: float  # Pearson r at the peak (0..1); below ~0.2 the estimate is unreliable
    method: str  # "mouth_model" or "energy_envelope"
    lags_ms: np.ndarray | None = field(default=None, repr=False)
    curve: np.ndarray | None = field(default=None, repr=False)  # r at each lag

    @property
    def needs_warning(self) -> bool:
        return abs(self.offset_ms) > WARN_MS

    def to_dict(self) -> dict:
        return {"offset_ms": round(float(self.offset_ms), 1), "confidence": round(float(self.confidence), 3),
                "method": self.method}


def _highpass(x: np.ndarray, width: int) -> np.ndarray:
    if width < 2 or len(x) <= width:
        return x - x.mean()
    kernel = np.ones(width) / width
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return x - np.convolve(padded, kernel, mode="valid")


def energy_envelope(audio_16k: np.ndarray) -> np.ndarray:
    """Log energy of the speech band (300-3400 Hz) per 10 ms hop, frame k ending at sample (k+1)*160: (T,)."""
    from scipy import signal as sps

    b, a = sps.butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE)
    x = sps.lfilter(b, a, np.asarray(audio_16k, dtype=np.float64))
    hop, win = 160, 400
    n = len(x) // hop
    padded = np.concatenate([np.zeros(win - hop), x[:n * hop]])
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    return np.log(np.mean(padded[idx] ** 2, axis=1) + 1e-8)


def lag_curve(dense: np.ndarray, mouth_open: np.ndarray, fps: float, base_ends: np.ndarray,
              max_lag_ms: float = MAX_LAG_MS, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r between the tracked mouth and a 100 Hz audio-implied signal read at each lag.

    dense[k]: the audio-implied value for a window ending at hop k+1. base_ends (N,): each video frame's
    window end at zero offset. Returns (lags_ms, r)."""
    n = len(mouth_open)
    hp = max(int(round(fps)), 2)
    y = _highpass(np.asarray(mouth_open, np.float64), hp)
    max_lag = int(round(max_lag_ms / HOP_MS))
    lags = np.arange(-max_lag, max_lag + 1)
    r = np.full(len(lags), np.nan)
    ok_base = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    dense_hp = _highpass(np.asarray(dense, np.float64), 100)
    for j, lag in enumerate(lags):
        k = base_ends + lag - 1
        ok = ok_base & (k >= 0) & (k < len(dense))
        if ok.sum() < max(10, 0.5 * n):
            continue
        a, b = dense_hp[k[ok]], y[ok]
        sa, sb = a.std(), b.std()
        if sa > 1e-9 and sb > 1e-9:
            r[j] = float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))
    return lags * HOP_MS, r


def _peak(lags_ms: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """Lag and height of the curve's maximum, refined by a parabola through its neighbours."""
    j = int(np.nanargmax(r))
    lag = float(lags_ms[j])
    if 0 < j < len(r) - 1 and np.isfinite(r[j - 1]) and np.isfinite(r[j + 1]):
        denom = r[j - 1] - 2 * r[j] + r[j + 1]
        if denom < 0:
            lag += float(0.5 * (r[j - 1] - r[j + 1]) / denom) * (lags_ms[1] - lags_ms[0])
    return lag, float(r[j])


def estimate_offset(audio_16k: np.ndarray, mouth_open: np.ndarray, fps: float, model="auto",
                    max_lag_ms: float = MAX_LAG_MS, valid: np.ndarray | None = None) -> OffsetEstimate:
    """Offset of the audio against the video from the audio and the tracked mouth opening.

    audio_16k: (S,) mono float32 at 16 kHz, time-aligned to the video's first frame as recorded.
    mouth_open: (N,) tracked mouth opening per video frame (avatar.expression.mouth_opening).
    model: "auto" (the shipped mouth model if present, else the energy envelope), None (energy envelope),
           a MouthModel, or a model directory.
    valid: optional (N,) bool of frames whose face was really tracked.
    """
    audio_16k = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
    mouth_open = np.asarray(mouth_open, dtype=np.float64).reshape(-1)
    if fps <= 0:
        raise InputError(f"invalid video frame rate {fps}", "pass the video's fps")
    seconds = min(len(audio_16k) / SAMPLE_RATE, len(mouth_open) / fps)
    if seconds < MIN_SECONDS:
        raise InputError(f"clip too short for an A/V offset estimate ({seconds:.1f} s)",
                         f"it needs at least {MIN_SECONDS:.0f} s of speech with the face visible")
    if np.sqrt(np.mean(audio_16k.astype(np.float64) ** 2)) < 1e-4:
        raise InputError("the audio is silent: no A/V offset can be estimated",
                         "pass a clip in which the person speaks")
    if np.std(mouth_open) < 1e-6:
        raise InputError("the tracked mouth never moves: no A/V offset can be estimated",
                         "check the face tracking of this clip")
    mouth_model = _resolve_model(model)
    if mouth_model is not None:
        from ideal.avatar.mouth.inference import frame_end_indices, predict_dense

        dense = predict_dense(mouth_model, audio_16k)
        base = frame_end_indices(len(mouth_open), fps, mouth_model.window, mouth_model.spec)
        method, bias = "mouth_model", 0.0
    else:
        dense = energy_envelope(audio_16k)
        base = _frame_ends(len(mouth_open), fps)
        method, bias = "energy_envelope", ENERGY_LAG_BIAS_MS
    lags, r = lag_curve(dense, mouth_open, fps, base, max_lag_ms, valid)
    if not np.isfinite(r).any():
        raise InputError("the clip gives no usable correlation between audio and mouth",
                         "check that the video shows the person who speaks")
    lag, peak = _peak(lags, r)
    est = OffsetEstimate(offset_ms=lag - bias, confidence=max(0.0, peak), method=method, lags_ms=lags, curve=r)
    log.info("A/V offset %+.0f ms (r=%.2f, %s)", est.offset_ms, peak, method)
    return est


def _frame_ends(n: int, fps: float) -> np.ndarray:
    """Hop index where each video frame ends (the energy envelope has no window, only its own framing)."""
    return np.rint((np.arange(n) + 1) / fps * 100.0).astype(np.int64)


def _resolve_model(model):
    if model is None:
        return None
    from ideal.avatar.mouth.model import MouthModel, load_mouth_model

    if isinstance(model, MouthModel):
        return model
    if isinstance(model, str) and model == "auto":
        from ideal.avatar.manifest import MOUTH_MODEL_DIR

        if not (MOUTH_MODEL_DIR / "mouth.json").exists():
            log.info("no shipped mouth model: A/V offset from the audio energy envelope")
            return None
        try:
            return load_mouth_model()
        except AvatarError as exc:
            log.warning("shipped mouth model unusable (%s): A/V offset from the audio energy envelope", exc)
            return None
    return load_mouth_model(Path(model))
