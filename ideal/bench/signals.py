"""The audio a benchmark feeds: speech after a stretch of silence, with the speech onset known exactly.

Latency is measured from the speech onset, so the onset must be a sample index, not a guess: the speech is
trimmed to where its short-time energy first rises within `onset_db` of its loudest 10 ms, and placed after
`silence_s` of digital silence. Without `--audio`, espeak-ng (when installed) speaks a fixed sentence; else
a synthetic voiced signal (a glottal pulse train through vowel formants, in syllables) stands in.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE

log = logging.getLogger(__name__)

SENTENCE = "Hello there. This is a latency test of the talking head, speaking after a short silence."


@dataclass
class BenchAudio:
    audio: np.ndarray  # (n,) float32 mono 16 kHz
    onset_sample: int  # first sample of speech
    source: str

    @property
    def onset_s(self) -> float:
        return self.onset_sample / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def speech_onset(audio: np.ndarray, onset_db: float = -30.0, hop: int = 160) -> int:
    """Index of the first 10 ms hop whose RMS is within `onset_db` of the loudest hop's (0 when all silent)."""
    n = len(audio) // hop
    if n == 0:
        return 0
    rms = np.sqrt(np.mean(audio[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    peak = float(rms.max())
    if peak <= 1e-6:
        return 0
    above = np.nonzero(rms >= peak * 10 ** (onset_db / 20))[0]
    return int(above[0] * hop)


def synthetic_speech(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Vowel-like syllables (pulse train at ~120 Hz through two formant resonators, 4 syllables/s)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    out = np.zeros(n)
    for f, bw in ((rng.uniform(650, 750), 90.0), (rng.uniform(1100, 1300), 110.0)):
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        a = [1, -2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), r * r]
        out += lfilter([1 - r], a, pulses)
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.5  # 4 syllables per second
    out *= envelope
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _espeak(text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    from ideal.avatar.audio.io import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        try:
            subprocess.run([exe, "-w", str(wav), "-s", "150", text], check=True, capture_output=True, timeout=30)
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("espeak-ng failed (%s); using synthetic speech", exc)
            return None
        return load_audio(wav)


def bench_audio(path: str | Path | None = None, silence_s: float = 1.5,
                max_speech_s: float | None = None) -> BenchAudio:
    """Speech (from `path`, espeak-ng, or synthetic) trimmed to its onset and placed after `silence_s` of silence."""
    if path is not None:
        from ideal.avatar.audio.io import load_audio

        speech, source = load_audio(path), str(path)
    else:
        speech = _espeak(SENTENCE)
        source = "espeak-ng" if speech is not None else "synthetic"
        if speech is None:
            speech = synthetic_speech()
    speech = np.asarray(speech, dtype=np.float32)
    speech = speech[speech_onset(speech):]
    if max_speech_s is not None:
        speech = speech[:int(max_speech_s * SAMPLE_RATE)]
    silence = np.zeros(int(round(silence_s * SAMPLE_RATE)), dtype=np.float32)
    return BenchAudio(np.concatenate([silence, speech]), len(silence), source)
