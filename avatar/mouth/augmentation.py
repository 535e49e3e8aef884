"""Audio augmentation for speaker and channel invariance, applied to the waveform before features.

Speaker: speed perturbation (resampling: shifts pitch *and* formants, like a different vocal-tract length;
the labels are re-timed with it) and pitch shift (phase vocoder, duration kept). Channel: additive noise at
a random SNR, a random EQ (peaking / shelving biquads), loudness. Each variant is drawn from a seeded
generator so a training run is reproducible and its augmented features can be cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import signal as sps

from ideal.avatar.clock import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentConfig:
    n_variants: int = field(default=4, metadata={"help": "augmented copies of each clip, besides the clean one"})
    speed_range: tuple[float, float] = (0.88, 1.12)
    pitch_semitones: tuple[float, float] = (-4.0, 4.0)
    p_pitch: float = 0.5
    snr_db: tuple[float, float] = (5.0, 35.0)
    p_noise: float = 0.7
    eq_gain_db: tuple[float, float] = (-10.0, 10.0)
    n_eq_bands: int = 3
    gain_db: tuple[float, float] = (-20.0, 6.0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AugmentParams:
    """One drawn variant (kept for logs and the cache key)."""

    speed: float
    pitch: float
    snr_db: float | None
    noise_colour: float  # 0 white, 1 pink, 2 brown
    eq: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q)
    gain_db: float


def draw_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    speed = float(rng.uniform(*cfg.speed_range))
    pitch = float(rng.uniform(*cfg.pitch_semitones)) if rng.random() < cfg.p_pitch else 0.0
    snr = float(rng.uniform(*cfg.snr_db)) if rng.random() < cfg.p_noise else None
    eq = tuple((float(np.exp(rng.uniform(np.log(150), np.log(6000)))), float(rng.uniform(*cfg.eq_gain_db)),
                float(rng.uniform(0.5, 2.0))) for _ in range(cfg.n_eq_bands))
    return AugmentParams(speed, pitch, snr, float(rng.integers(0, 3)), eq, float(rng.uniform(*cfg.gain_db)))


def speed_perturb(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play `speed` times faster (duration / speed), pitch and formants scaled by `speed`."""
    import soxr

    if abs(speed - 1.0) < 1e-6:
        return audio
    # resampling from sr*speed to sr and playing at sr = speeding up by `speed`
    return soxr.resample(audio, SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ").astype(np.float32)


def retime_labels(labels: np.ndarray, speed: float) -> np.ndarray:
    """Labels (N, ...) of a clip sped up by `speed`: frame i of the new clip shows old time i * speed."""
    n_new = int(np.floor(len(labels) / speed))
    t = np.arange(n_new) * speed
    flat = labels.reshape(len(labels), -1)
    out = np.stack([np.interp(t, np.arange(len(labels)), flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape((n_new,) + labels.shape[1:]).astype(labels.dtype)


def coloured_noise(n: int, colour: float, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == 0:
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spec /= f ** (colour / 2.0)
    noise = np.fft.irfft(spec, n)
    return noise / (np.std(noise) + 1e-12)


def peaking_eq(audio: np.ndarray, bands: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Apply RBJ peaking biquads (centre Hz, gain dB, Q) in sequence."""
    out = audio.astype(np.float64)
    for f0, gain_db, q in bands:
        a_lin = 10 ** (gain_db / 40.0)
        w0 = 2 * np.pi * min(f0, SAMPLE_RATE * 0.45) / SAMPLE_RATE
        alpha = np.sin(w0) / (2 * q)
        b = [1 + alpha * a_lin, -2 * np.cos(w0), 1 - alpha * a_lin]
        a = [1 + alpha / a_lin, -2 * np.cos(w0), 1 - alpha / a_lin]
        out = sps.lfilter(b, a, out)
    return out


def apply(audio: np.ndarray, p: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Augmented copy of a 16 kHz mono signal (the speed change alters its length: see retime_labels)."""
    import librosa

    x = speed_perturb(np.asarray(audio, np.float32), p.speed).astype(np.float64)
    if p.pitch != 0.0:
        x = librosa.effects.pitch_shift(x.astype(np.float32), sr=SAMPLE_RATE, n_steps=p.pitch).astype(np.float64)
    x = peaking_eq(x, p.eq)
    if p.snr_db is not None:
        speech_power = np.mean(x ** 2) + 1e-12
        noise = coloured_noise(len(x), p.noise_colour, rng)
        x = x + noise * np.sqrt(speech_power / 10 ** (p.snr_db / 10.0))
    x = x * 10 ** (p.gain_db / 20.0)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak > 0.99:  # a real channel clips; keep it in range rather than wrap
        x = np.clip(x, -0.99, 0.99)
    return x.astype(np.float32)
