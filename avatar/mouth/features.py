"""Input features of the audio-to-mouth model, all causal with a streaming form that equals the offline one.

Three kinds are measured against each other (benchmarks/mouth_loso.py, docs/mouth.md):

- ``logmel``: the project's causal log-mel (avatar.audio.features, running normalisation), 80 bins.
- ``cepstral``: the same log-mel followed by a fixed DCT keeping the first `n_ceps` coefficients. Low
  quefrencies keep the vocal-tract envelope (what the mouth shapes) and drop the pitch harmonics (who is
  speaking). Because it is a fixed per-frame linear map it is baked into the network as its first layer, so
  the model's input is still the plain log-mel and the streamer computes nothing new.
- ``formant``: LPC formant tracks (F1-F3 and their bandwidths), log energy and spectral tilt, computed per
  10 ms hop on the same framing as the log-mel, with a running normalisation. Its own streaming class.

Offline features are the streaming class fed the whole signal, so the two agree for any chunking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.fft import dct

from ideal.avatar.audio.features import MelConfig, StreamingMelFeatures

FEATURE_KINDS = ("logmel", "cepstral", "formant")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features feed the network. `input_dim` is the width of what the network receives."""

    kind: str = "logmel"
    mel: MelConfig = field(default_factory=MelConfig)
    n_ceps: int = 24  # cepstral: coefficients kept
    lpc_order: int = 14  # formant: LPC order at 16 kHz

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; one of {FEATURE_KINDS}")

    @property
    def input_dim(self) -> int:
        """Per-frame width of the *network input* (cepstral networks take the log-mel and apply the DCT)."""
        return FORMANT_DIM if self.kind == "formant" else self.mel.n_mels

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mel": self.mel.to_dict(), "n_ceps": self.n_ceps, "lpc_order": self.lpc_order}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(kind=d["kind"], mel=MelConfig.from_dict(d["mel"]), n_ceps=int(d.get("n_ceps", 24)),
                   lpc_order=int(d.get("lpc_order", 14)))


def dct_matrix(n_mels: int, n_ceps: int) -> np.ndarray:
    """(n_mels, n_ceps) orthonormal DCT-II: cepstra = log_mel @ M."""
    return dct(np.eye(n_mels, dtype=np.float64), type=2, norm="ortho", axis=0)[:, :n_ceps].astype(np.float32)


# --- formant tracks -----------------------------------------------------------------------------------------
FORMANT_DIM = 8  # F1, F2, F3 (log Hz), B1, B2, B3 (log Hz), log energy, spectral tilt


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomial a (order+1,) from autocorrelation r (order+1,), a[0] = 1."""
    a = np.zeros(order + 1)
    a[0] = 1.0
    err = r[0]
    for i in range(1, order + 1):
        if err <= 0:
            break
        k = -(r[i] + np.dot(a[1:i], r[i - 1:0:-1])) / err
        a[1:i + 1] = a[1:i + 1] + k * a[i - 1::-1][:i]
        err *= 1.0 - k * k
    return a


def _formants_of_frame(frame: np.ndarray, order: int, sr: int) -> np.ndarray:
    """Raw (un-normalised) formant vector of one windowed frame."""
    energy = float(np.mean(frame * frame))
    log_e = np.log(energy + 1e-10)
    pre = np.append(frame[0], frame[1:] - 0.97 * frame[:-1])
    r = np.correlate(pre, pre, mode="full")[len(pre) - 1:len(pre) + order]
    out = np.zeros(FORMANT_DIM)
    out[6] = log_e
    out[7] = r[1] / r[0] if r[0] > 1e-12 else 0.0  # first autocorrelation coefficient: spectral tilt
    # defaults for silence/unvoiced: a neutral schwa-like vocal tract
    freqs, bws = [500.0, 1500.0, 2500.0], [100.0, 100.0, 100.0]
    if r[0] > 1e-9:
        r = r * np.concatenate([[1.0 + 1e-6], np.ones(order)])  # white-noise correction for stability
        a = _levinson(r, order)
        roots = np.roots(a)
        roots = roots[np.imag(roots) > 0.01]
        f = np.angle(roots) * sr / (2 * np.pi)
        b = -np.log(np.maximum(np.abs(roots), 1e-6)) * sr / np.pi
        keep = (f > 90) & (f < sr / 2 - 200) & (b < 600)
        f, b = f[keep], b[keep]
        order_idx = np.argsort(f)
        f, b = f[order_idx], b[order_idx]
        for j in range(min(3, len(f))):
            freqs[j], bws[j] = float(f[j]), float(b[j])
    out[0:3] = np.log(freqs)
    out[3:6] = np.log(np.maximum(bws, 1.0))
    return out


class StreamingFormantFeatures:
    """Chunk-by-chunk causal formant features on the log-mel framing (frame k ends at sample (k+1)*hop).

    Normalisation is running, like the log-mel: a per-dimension mean and variance that start from fixed priors
    and follow voiced frames only (cumulative for `norm_warmup` frames, then exponential)."""

    _PRIOR_MEAN = np.array([np.log(500), np.log(1500), np.log(2500), np.log(150), np.log(150), np.log(200),
                            -7.0, 0.8])
    _PRIOR_STD = np.array([0.4, 0.3, 0.2, 1.0, 1.0, 1.0, 3.0, 0.2])

    def __init__(self, spec: FeatureSpec = FeatureSpec(kind="formant")) -> None:
        self.spec = spec
        cfg = spec.mel
        self._win = np.hanning(cfg.win_length + 1)[:-1]
        self._history = np.zeros(cfg.win_length - cfg.hop_length, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._mean = self._PRIOR_MEAN.copy()
        self._var = self._PRIOR_STD.copy() ** 2
        self._voiced = 0
        self._silence_power = 10.0 ** (cfg.silence_db / 10.0)

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Mono float32 16 kHz samples in; newly completed frames out, (k, FORMANT_DIM)."""
        cfg = self.spec.mel
        buf = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32).reshape(-1)])
        n = len(buf) // cfg.hop_length
        if n == 0:
            self._pending = buf
            return np.zeros((0, FORMANT_DIM), dtype=np.float32)
        used = n * cfg.hop_length
        signal = np.concatenate([self._history, buf[:used]])
        self._pending = buf[used:]
        self._history = signal[len(signal) - (cfg.win_length - cfg.hop_length):].copy()
        out = np.empty((n, FORMANT_DIM), dtype=np.float32)
        tau = 1.0 / cfg.norm_tau_frames
        for j in range(n):
            frame = signal[j * cfg.hop_length:j * cfg.hop_length + cfg.win_length].astype(np.float64)
            raw = _formants_of_frame(frame * self._win, self.spec.lpc_order, cfg.sample_rate)
            if np.mean(frame * frame) > self._silence_power:
                self._voiced += 1
                alpha = max(1.0 / self._voiced, tau) if self._voiced <= cfg.norm_warmup else tau
                d = raw - self._mean
                self._mean += alpha * d
                self._var += alpha * (d * d - self._var)
            out[j] = (raw - self._mean) / np.sqrt(self._var + 1e-4)
        return out


class StreamingMouthFeatures:
    """Network-input features of any kind, chunk by chunk: (k, spec.input_dim) per push."""

    def __init__(self, spec: FeatureSpec = FeatureSpec()) -> None:
        self.spec = spec
        self._impl = StreamingFormantFeatures(spec) if spec.kind == "formant" else StreamingMelFeatures(spec.mel)

    def push(self, audio: np.ndarray) -> np.ndarray:
        return self._impl.push(audio)


def compute_mouth_features(audio: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """Offline network-input features of a whole 16 kHz mono signal: (n_frames, spec.input_dim) at 100 fps."""
    return StreamingMouthFeatures(spec).push(audio)


def padding_value(spec: FeatureSpec) -> float:
    """Value that pads windows before the start / past the end of the audio (silence)."""
    from ideal.avatar.audio.features import silence_value

    return 0.0 if spec.kind == "formant" else silence_value(spec.mel)
