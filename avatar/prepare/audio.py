"""The clip's audio on the video frame clock: 16 kHz mono, exactly n_frames * 16000 / fps samples long."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class AudioFit:
    """What was done to make the audio match the frames (sample counts at 16 kHz)."""

    n_samples: int
    start_trimmed: int = 0
    start_padded: int = 0
    end_trimmed: int = 0
    end_padded: int = 0
    offset_ms: float = 0.0  # the A/V offset that was corrected (positive = audio was late)
    offset_method: str = "none"
    offset_confidence: float | None = None
    offset_estimated_ms: float | None = None

    @property
    def padded_samples(self) -> int:
        return self.start_padded + self.end_padded

    @property
    def trimmed_samples(self) -> int:
        return self.start_trimmed + self.end_trimmed

    def to_dict(self) -> dict:
        return {"n_samples": self.n_samples, "padded_samples": self.padded_samples,
                "trimmed_samples": self.trimmed_samples, "start_padded": self.start_padded,
                "start_trimmed": self.start_trimmed, "end_padded": self.end_padded,
                "end_trimmed": self.end_trimmed, "av_offset_ms": self.offset_ms,
                "av_offset_method": self.offset_method, "av_offset_confidence": self.offset_confidence,
                "av_offset_estimated_ms": self.offset_estimated_ms}


def load_clip_audio(video: Path, audio: Path | None, video_start_s: float, audio_start_s: float | None,
                    start: float | None, duration_s: float) -> np.ndarray:
    """16 kHz mono samples covering [start, start + duration_s) of the video's timeline (not yet length-fitted).

    With `audio` (a separate file) its sample 0 is the video's first frame. With the video's own track the
    container's stream start times are honoured (an audio track may start before or after the first frame).
    """
    from ideal.avatar.audio.io import load_audio

    if audio is None:
        import av

        with av.open(str(video)) as c:
            has_audio = bool(c.streams.audio)
        if not has_audio:
            raise InputError(f"{video}: has no audio track", "pass the speech separately with --audio FILE.wav")
        pcm = load_audio(video)
        lead_s = (audio_start_s if audio_start_s is not None else video_start_s) - video_start_s
    else:
        pcm = load_audio(audio)
        lead_s = 0.0
    # Sample index (in pcm) of the excerpt's first frame.
    first = int(round(((start or 0.0) - lead_s) * SAMPLE_RATE))
    want = int(round(duration_s * SAMPLE_RATE))
    if first < 0:
        pcm = np.concatenate([np.zeros(-first, np.float32), pcm])
        first = 0
    return pcm[first:first + want + SAMPLE_RATE]  # one spare second: fit_audio trims it


def fit_audio(pcm: np.ndarray, n_frames: int, fps: float, offset_ms: float = 0.0, offset_method: str = "none",
              offset_confidence: float | None = None, source: str = "",
              beyond_span: int = 0) -> tuple[np.ndarray, AudioFit]:
    """Shift by the A/V offset (positive offset: audio late, so drop that much from the start; negative: pad)
    and pad/trim the end so that len == round(n_frames * 16000 / fps). Returns (audio, what was done).

    `beyond_span`: how many samples at the end of `pcm` lie past the excerpt (look-ahead for the offset
    shift); dropping them is not counted as trimming. For a whole clip it is 0, so audio that runs longer
    than the video is reported as trimmed."""
    target = int(round(n_frames * SAMPLE_RATE / fps))
    fit = AudioFit(n_samples=target, offset_ms=float(offset_ms), offset_method=offset_method,
                   offset_confidence=offset_confidence)
    shift = int(round(offset_ms * SAMPLE_RATE / 1000.0))
    x = np.asarray(pcm, np.float32)
    if shift > 0:
        fit.start_trimmed = min(shift, len(x))
        x = x[shift:]
    elif shift < 0:
        fit.start_padded = -shift
        x = np.concatenate([np.zeros(-shift, np.float32), x])
    if len(x) > target:
        fit.end_trimmed = max(0, len(x) - target - beyond_span)
        x = x[:target]
    elif len(x) < target:
        fit.end_padded = target - len(x)
        x = np.concatenate([x, np.zeros(target - len(x), np.float32)])
    # Padding that the offset correction itself causes (audio shifted earlier) is expected; warn about the rest.
    short = fit.end_padded - max(shift, 0)
    if short > 0.1 * SAMPLE_RATE:
        log.warning("%s: audio is %.2f s shorter than the video; padded with silence",
                    source, short / SAMPLE_RATE)
    return x, fit
