"""Causal log-mel features: one streaming class, and the offline function that is literally that class
fed the whole signal, so offline (training) and streaming (live) features agree to float tolerance for any
chunking.

Causality: mel frame k covers the `win_length` samples that end at sample (k + 1) * hop_length, the
history before the first sample being zeros. Frame k is therefore known as soon as sample (k+1)*hop has
arrived. Normalisation is running: a per-bin mean that starts from a fixed prior, becomes a cumulative mean
over the first `norm_warmup` voiced frames and then an exponential moving average. Frames more than `gate_db`
below the running level (or below the absolute `silence_db`, i.e. digital silence) do not update it, so pauses
do not drag the level down; the gate is relative, so the features do not depend on the microphone's gain. The
normalised value is `(log_mel - running_mean) / norm_scale`.

At 16 kHz with hop 160 there are 100 mel frames per second: 4 per video frame at 25 fps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    log_floor: float = 1e-10
    prior_mean: float = -6.0
    norm_warmup: int = 200
    norm_tau_frames: int = 300
    norm_scale: float = 4.0
    silence_db: float = -90.0
    gate_db: float = 30.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict:
        return {"kind": "causal_logmel", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MelConfig":
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**d)


def _mel_basis(cfg: MelConfig) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                               fmin=cfg.fmin, fmax=cfg.fmax).astype(np.float32)


class StreamingMelFeatures:
    """Chunk-by-chunk causal log-mel: constant work per hop, memory bounded by one analysis window."""

    def __init__(self, cfg: MelConfig = MelConfig()) -> None:
        self.cfg = cfg
        self._basis = _mel_basis(cfg)
        self._window = np.hanning(cfg.win_length + 1)[:-1].astype(np.float32)
        self._history = np.zeros(cfg.win_length - cfg.hop_length, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._mean = np.full(cfg.n_mels, cfg.prior_mean, dtype=np.float64)
        self._voiced = 0
        self._silence_power = 10.0 ** (cfg.silence_db / 10.0)
        self._gate = cfg.gate_db * np.log(10.0) / 10.0  # dB -> natural-log power units

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Feed mono float32 16 kHz samples; returns the newly completed feature frames, shape (k, n_mels)."""
        cfg = self.cfg
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._pending, audio])
        n_frames = len(buf) // cfg.hop_length
        if n_frames == 0:
            self._pending = buf
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        used = n_frames * cfg.hop_length
        signal = np.concatenate([self._history, buf[:used]])
        self._pending = buf[used:]
        self._history = signal[len(signal) - (cfg.win_length - cfg.hop_length):].copy()
        # frame j spans signal[j*hop : j*hop + win]
        idx = np.arange(cfg.win_length)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]
        frames = signal[idx]
        power_td = np.mean(frames * frames, axis=1)
        spec = np.fft.rfft(frames * self._window, n=cfg.n_fft, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        log_mel = np.log(power @ self._basis.T + cfg.log_floor)
        out = np.empty_like(log_mel)
        alpha_ema = 1.0 / cfg.norm_tau_frames
        for j in range(n_frames):
            level = log_mel[j].mean()
            gated = self._voiced >= cfg.norm_warmup and level < self._mean.mean() - self._gate
            if power_td[j] > self._silence_power and not gated:
                self._voiced += 1
                alpha = max(1.0 / self._voiced, alpha_ema) if self._voiced <= cfg.norm_warmup else alpha_ema
                self._mean += alpha * (log_mel[j] - self._mean)
            out[j] = (log_mel[j] - self._mean) / cfg.norm_scale
        return out.astype(np.float32)


def compute_features(audio: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Offline features of a whole 16 kHz mono signal: (n_frames, n_mels), identical to streaming them."""
    return StreamingMelFeatures(cfg).push(audio)


@dataclass(frozen=True)
class AudioWindow:
    """Which mel frames condition video frame i: `length` frames ending `lookahead_ms` after the frame ends.

    Both numbers are properties of a trained model (recorded in its manifest); the lookahead is latency the
    streamer must wait for.
    """

    length: int = 16
    lookahead_ms: float = 40.0

    def lookahead_frames(self, cfg: MelConfig = MelConfig()) -> int:
        return int(round(self.lookahead_ms * cfg.frames_per_second / 1000.0))

    def end_frame(self, video_frame: int, fps: float, cfg: MelConfig = MelConfig()) -> int:
        """Exclusive mel index where the window of `video_frame` ends."""
        frame_end_s = (video_frame + 1) / fps
        return int(round(frame_end_s * cfg.frames_per_second)) + self.lookahead_frames(cfg)

    def to_dict(self) -> dict:
        return {"length": self.length, "lookahead_ms": self.lookahead_ms}

    @classmethod
    def from_dict(cls, d: dict) -> "AudioWindow":
        return cls(length=int(d["length"]), lookahead_ms=float(d["lookahead_ms"]))


def window_for_frame(mel: np.ndarray, video_frame: int, fps: float, window: AudioWindow,
                     cfg: MelConfig = MelConfig()) -> np.ndarray:
    """(window.length, n_mels) slice for one video frame; frames before the start or past the end are
    silence-valued (the normalised floor), so any frame index is answerable."""
    end = window.end_frame(video_frame, fps, cfg)
    start = end - window.length
    out = np.full((window.length, mel.shape[1]), silence_value(cfg), dtype=np.float32)
    lo, hi = max(start, 0), min(end, len(mel))
    if hi > lo:
        out[lo - start:hi - start] = mel[lo:hi]
    return out


def windows_for_frames(mel: np.ndarray, n_video_frames: int, fps: float, window: AudioWindow,
                       cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Stack of windows for frames 0..n-1: (n, window.length, n_mels)."""
    return np.stack([window_for_frame(mel, i, fps, window, cfg) for i in range(n_video_frames)])


def silence_value(cfg: MelConfig = MelConfig()) -> float:
    """Feature value of digital silence under the prior mean (used to pad windows)."""
    return float((np.log(cfg.log_floor) - cfg.prior_mean) / cfg.norm_scale)
