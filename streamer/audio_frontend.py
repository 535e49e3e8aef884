"""The audio front end of a session: PCM as it arrives -> one 16 kHz mono timeline with VAD and features.

    push_audio(pcm, rate, channels) --EdgeConverter--> 16 kHz mono float32
        --AudioFrontend.push--> SampleRing (the timeline's samples), VoiceActivity (webrtcvad + hysteresis),
                                 one FeatureRing per feature stream (causal log-mel, mouth-model features)

Work per chunk is proportional to the chunk (no step looks back further than one analysis window) and every
buffer is a fixed-size ring, so a ten-minute call costs per chunk what the first second did. The streaming
feature classes are the same ones offline features are computed with, so the rings hold exactly the offline
features of the timeline for any chunking (tests/test_streamer_frontend.py).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import soxr

from ideal.avatar.audio.io import level_db, to_mono
from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8


class StreamingFeatures(Protocol):
    def push(self, audio: np.ndarray) -> np.ndarray: ...  # (n,) float32 16 kHz -> (k, dim) new frames


@dataclass(frozen=True)
class FeatureStreamSpec:
    """A causal feature stream at 100 frames/s: `factory()` makes the streaming computer; `pad` is the value of
    silence used before the first frame."""

    factory: Callable[[], StreamingFeatures]
    dim: int
    pad: float


# --- edge conversion ----------------------------------------------------------------------------------------
def validate_pcm(pcm: object, sample_rate: object, channels: object) -> np.ndarray:
    """Check a pushed buffer; returns it as an array. Raises InputError naming what is wrong."""
    if not isinstance(pcm, np.ndarray):
        raise InputError(f"push_audio: pcm is a {type(pcm).__name__}, not a numpy array",
                         "pass an int16 or float32 numpy array")
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) \
            or not MIN_RATE <= int(sample_rate) <= MAX_RATE:
        raise InputError(f"push_audio: sample rate {sample_rate!r} is not an integer in {MIN_RATE}..{MAX_RATE} Hz",
                         "pass the rate the audio was captured at, e.g. 48000")
    if not isinstance(channels, (int, np.integer)) or not 1 <= int(channels) <= MAX_CHANNELS:
        raise InputError(f"push_audio: channels={channels!r} is not 1..{MAX_CHANNELS}",
                         "pass the number of interleaved channels")
    if pcm.dtype not in (np.int16, np.float32, np.float64, np.int32):
        raise InputError(f"push_audio: pcm dtype {pcm.dtype} is not supported", "pass int16 or float32 samples")
    if pcm.ndim == 2:
        if pcm.shape[1] != channels:
            raise InputError(f"push_audio: pcm of shape {pcm.shape} does not have {channels} channel column(s)",
                             "pass interleaved 1-D samples or an (n, channels) array")
    elif pcm.ndim != 1:
        raise InputError(f"push_audio: pcm has {pcm.ndim} dimensions", "pass 1-D interleaved samples")
    elif pcm.size % int(channels):
        raise InputError(f"push_audio: {pcm.size} interleaved samples are not a whole number of "
                         f"{channels}-channel frames", "pass whole frames, or the right channel count")
    if pcm.dtype.kind == "f" and pcm.size and not np.isfinite(pcm).all():
        raise InputError("push_audio: pcm contains NaN or infinite samples", "pass finite float samples in [-1, 1]")
    return pcm


# The low-delay resampler for whole-number ratios (48 and 32 kHz browsers): a linear-phase low-pass and every
# M-th sample. Against soxr HQ of the whole signal (what offline features use), on real speech at 48 kHz: 61 dB
# SNR, same timing, and the mouth model's output differs by < 1e-4 (of a 0.8 range); it holds back 5 ms of input
# where soxr HQ in 20 ms chunks holds back up to 37 ms, which every frame's deadline has to wait for.
FIR_TAPS_PER_FACTOR = 160  # 481 taps at 48 kHz: flat to 7.5 kHz (-0.2 dB), -76 dB from 8 kHz
FIR_CUTOFF_HZ = 7700.0
FIR_KAISER_BETA = 10.0


class IntegerDecimator:
    """Streaming `rate` -> 16 kHz for rate = M x 16 kHz: output sample j is the filtered input at sample M j, so the
    output keeps the input's timing exactly (as soxr does) and trails it by the filter's half length only."""

    def __init__(self, rate: int) -> None:
        from scipy.signal import firwin

        if rate % SAMPLE_RATE or rate <= SAMPLE_RATE:
            raise ValueError(f"{rate} Hz is not a whole multiple of {SAMPLE_RATE} Hz")
        self.factor = rate // SAMPLE_RATE
        taps = FIR_TAPS_PER_FACTOR * self.factor + 1
        self._h = firwin(taps, FIR_CUTOFF_HZ, fs=rate, window=("kaiser", FIR_KAISER_BETA)).astype(np.float32)
        self.half = (taps - 1) // 2
        self._buf = np.zeros(self.half, np.float32)  # input from sample M j_next - half on (zeros before the start)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._buf, np.asarray(x, np.float32)])
        taps, m = len(self._h), self.factor
        n = (len(buf) - taps) // m + 1 if len(buf) >= taps else 0
        if n <= 0:
            self._buf = buf
            return np.zeros(0, np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(buf[: (n - 1) * m + taps], taps)[::m]
        self._buf = buf[n * m:]
        return (windows @ self._h).astype(np.float32)  # the filter is symmetric: correlation = convolution

    def flush(self) -> np.ndarray:
        """The outputs still held back (one per M input samples), as if the input went on in silence."""
        return self(np.zeros(self.half, np.float32))


class EdgeConverter:
    """Any rate and channel count -> 16 kHz mono float32, chunk by chunk.

    `quality` "FIR" (the default): `IntegerDecimator` where the rate is a whole multiple of 16 kHz (5 ms holdback
    at 48 kHz), soxr HQ otherwise; else a soxr quality for every rate. soxr works in blocks, so its output trails
    its input by a varying few tens of ms (at 48 kHz HQ: 8-37 ms); `holdback_ms` reports it. A change of input
    rate flushes the old resampler and starts a new one."""

    def __init__(self, quality: str = "FIR") -> None:
        self.quality = quality
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | IntegerDecimator | None = None
        self._in = 0  # input samples since the current resampler started
        self._out = 0

    def convert(self, pcm: np.ndarray, sample_rate: int, channels: int = 1) -> np.ndarray:
        mono = to_mono(pcm, channels if pcm.ndim == 1 else 1).astype(np.float32, copy=False)
        rate = int(sample_rate)
        flushed = np.zeros(0, np.float32)
        if rate != self._rate:
            flushed = self.flush()
            self._rate, self._in, self._out = rate, 0, 0
            self._stream = new_resampler(rate, self.quality)
        if self._stream is None:
            out = mono
        elif isinstance(self._stream, IntegerDecimator):
            out = self._stream(mono)
        else:
            out = self._stream.resample_chunk(np.ascontiguousarray(mono), last=False)
        self._in += len(mono)
        self._out += len(out)
        return np.concatenate([flushed, out]) if len(flushed) else out

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        if isinstance(self._stream, IntegerDecimator):
            expected = int(round(self._in / self._stream.factor))  # what soxr would have returned in all
            out = self._stream.flush()[: max(0, expected - self._out)]
        else:
            out = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self._stream = None
        self._rate = None
        return out

    @property
    def holdback_ms(self) -> float:
        if not self._rate:
            return 0.0
        return max(0.0, 1000.0 * (self._in / self._rate - self._out / SAMPLE_RATE))


def new_resampler(rate: int, quality: str) -> soxr.ResampleStream | IntegerDecimator | None:
    """The streaming resampler `EdgeConverter` uses for `rate` (None at 16 kHz: nothing to do)."""
    if rate == SAMPLE_RATE:
        return None
    if quality == "FIR":
        if rate % SAMPLE_RATE == 0:
            return IntegerDecimator(rate)
        quality = "HQ"
    return soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)


@functools.lru_cache(maxsize=64)
def resampler_holdback_ms(rate: int, chunk: int, quality: str = "FIR") -> float:
    """The most the streaming resampler holds back (input time in minus output time out, in ms) when fed `chunk`
    samples at a time at `rate`, measured once by simulation. 0 at 16 kHz (no resampling)."""
    if rate == SAMPLE_RATE or chunk <= 0:
        return 0.0
    stream = new_resampler(rate, quality)
    zeros = np.zeros(chunk, np.float32)
    n_in = n_out = 0
    worst = 0.0
    for _ in range(max(20, int(2.0 * rate / chunk))):  # two seconds: soxr's block pattern repeats well within
        n_out += len(stream(zeros) if isinstance(stream, IntegerDecimator) else
                     stream.resample_chunk(zeros, last=False))  # type: ignore[union-attr]
        n_in += chunk
        worst = max(worst, 1000.0 * (n_in / rate - n_out / SAMPLE_RATE))
    return worst


# --- rings --------------------------------------------------------------------------------------------------
class FeatureRing:
    """The last `capacity` rows of an append-only (T, dim) stream, addressed by absolute row index."""

    def __init__(self, capacity: int, dim: int, pad: float, dtype: type = np.float32) -> None:
        self._buf: np.ndarray = np.full((capacity, dim), pad, dtype=dtype)
        self.capacity, self.dim, self.pad = capacity, dim, pad
        self.end = 0  # absolute index one past the newest row

    def push(self, rows: np.ndarray) -> None:
        rows = rows.reshape(-1, self.dim)
        n = len(rows)
        if n >= self.capacity:
            rows, self.end = rows[n - self.capacity:], self.end + n - self.capacity
            n = self.capacity
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos:pos + first] = rows[:first]
        self._buf[:n - first] = rows[first:]
        self.end += n

    @property
    def start(self) -> int:
        return max(0, self.end - self.capacity)

    def get(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): rows before index 0 or past `end` are `pad`; rows already overwritten raise."""
        out = np.full((stop - start, self.dim), self.pad, dtype=self._buf.dtype)
        lo, hi = max(start, 0), min(stop, self.end)
        if hi > lo:
            if lo < self.start:
                raise IndexError(f"rows {lo}..{hi} are older than the ring keeps ({self.start}..{self.end})")
            idx = np.arange(lo, hi) % self.capacity
            out[lo - start:hi - start] = self._buf[idx]
        return out

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes


class SampleRing(FeatureRing):
    """The timeline's last samples, 1-D."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, 1, 0.0)

    def get(self, start: int, stop: int) -> np.ndarray:
        return super().get(start, stop)[:, 0]


# --- voice activity -----------------------------------------------------------------------------------------
class VoiceActivity:
    """webrtcvad on fixed blocks, with hysteresis so background noise does not flicker the speech state.

    A block counts as voiced when webrtcvad says so *and* it stands `above_floor_db` over a running noise
    floor (which drops at once to a quieter block and rises slowly): webrtcvad alone calls the first few hundred
    ms of a steady hiss speech while it adapts. Enter speech when `on_blocks` of the last `on_window` blocks are
    voiced; leave it `hangover` blocks after the last voiced block. Flags are kept per block in a ring."""

    def __init__(self, aggressiveness: int = 2, block_ms: int = 20, on_ms: float = 60.0,
                 on_window_ms: float = 100.0, hangover_ms: float = 240.0, ring_seconds: float = 4.0,
                 above_floor_db: float = 9.0, floor_rise_db_per_s: float = 3.0) -> None:
        import webrtcvad  # the wheels package; imported here to keep `import streamer` light

        if block_ms not in (10, 20, 30):
            raise ValueError("webrtcvad takes 10, 20 or 30 ms frames")
        self._vad = webrtcvad.Vad(int(aggressiveness))
        self.block = SAMPLE_RATE * block_ms // 1000
        self._pending = np.zeros(0, np.float32)
        self._on_blocks = max(1, int(round(on_ms / block_ms)))
        self._recent: deque[bool] = deque(maxlen=max(self._on_blocks, int(round(on_window_ms / block_ms))))
        self._hangover = max(1, int(round(hangover_ms / block_ms)))
        self._since_voiced = 10 ** 9
        self._state = False
        self._above_floor_db = above_floor_db
        self._floor_rise = floor_rise_db_per_s * block_ms / 1000.0
        self._floor_db: float | None = None
        self._blocks_seen = 0
        cap = int(ring_seconds * 1000 / block_ms) + 1
        self._raw = FeatureRing(cap, 1, 0.0, dtype=np.uint8)
        self._speech = FeatureRing(cap, 1, 0.0, dtype=np.uint8)

    def push(self, audio: np.ndarray) -> None:
        buf = np.concatenate([self._pending, audio])
        n = len(buf) // self.block
        self._pending = buf[n * self.block:]
        if n == 0:
            return
        pcm = (np.clip(buf[:n * self.block], -1.0, 1.0) * 32767.0).astype(np.int16)
        raw = np.zeros(n, np.uint8)
        smooth = np.zeros(n, np.uint8)
        for j in range(n):
            block = buf[j * self.block:(j + 1) * self.block]
            level = float(level_db(block))
            # the floor starts no higher than -50 dBFS (so speech from the first block counts) and rises fast in
            # the first second (so a loud steady hiss is learned before webrtcvad has adapted to it)
            rise = self._floor_rise * (8.0 if self._blocks_seen * self.block < SAMPLE_RATE else 1.0)
            self._floor_db = min(level, -50.0) if self._floor_db is None else min(level, self._floor_db + rise)
            self._blocks_seen += 1
            voiced = level > self._floor_db + self._above_floor_db and \
                self._vad.is_speech(pcm[j * self.block:(j + 1) * self.block].tobytes(), SAMPLE_RATE)
            self._recent.append(voiced)
            self._since_voiced = 0 if voiced else self._since_voiced + 1
            if not self._state and sum(self._recent) >= self._on_blocks:
                self._state = True
            elif self._state and self._since_voiced >= self._hangover:
                self._state = False
            raw[j], smooth[j] = voiced, self._state
        self._raw.push(raw)
        self._speech.push(smooth)

    @property
    def floor_db(self) -> float | None:
        """The running background level (dBFS), None before any audio."""
        return self._floor_db

    @property
    def blocks(self) -> int:
        return self._speech.end

    def speech(self, start_sample: int, stop_sample: int, smoothed: bool = True) -> bool | None:
        """Whether any block overlapping samples [start, stop) is speech; None if those blocks are not in yet."""
        b0, b1 = start_sample // self.block, -(-stop_sample // self.block)
        if b1 > self.blocks:
            return None
        ring = self._speech if smoothed else self._raw
        b0 = max(b0, ring.start)
        return bool(ring.get(b0, b1).any()) if b1 > b0 else False

    @property
    def nbytes(self) -> int:
        return self._raw.nbytes + self._speech.nbytes


# --- the front end ------------------------------------------------------------------------------------------
@dataclass
class FrontendCounters:
    chunks: int = 0
    samples: int = 0  # timeline samples (received + filled)
    filled_samples: int = 0  # silence inserted for missing audio
    feature_frames: int = 0
    busy_s: float = 0.0  # time spent in push (features + VAD)


class AudioFrontend:
    """One session's 16 kHz timeline: samples, VAD and named feature streams, all in bounded rings.

    Also remembers when each stretch of the timeline arrived (and whether it was real audio or filled
    silence), which is what per-frame latency is measured from."""

    def __init__(self, streams: dict[str, FeatureStreamSpec], ring_seconds: float = 4.0,
                 vad_aggressiveness: int = 2, vad_frame_ms: int = 20, speech_on_ms: float = 60.0,
                 speech_on_window_ms: float = 100.0, speech_hangover_ms: float = 240.0) -> None:
        self.ring_seconds = ring_seconds
        self._samples = SampleRing(int(ring_seconds * SAMPLE_RATE))
        self._streams = {name: spec.factory() for name, spec in streams.items()}
        self._rings = {name: FeatureRing(int(ring_seconds * 100) + 1, spec.dim, spec.pad)
                       for name, spec in streams.items()}
        self.vad = VoiceActivity(vad_aggressiveness, vad_frame_ms, speech_on_ms, speech_on_window_ms,
                                 speech_hangover_ms, ring_seconds)
        self._arrivals: deque[tuple[int, int, float, bool]] = deque()  # (start, stop, arrival time, filled)
        self.counters = FrontendCounters()

    @property
    def samples_written(self) -> int:
        """Length of the timeline so far (16 kHz samples)."""
        return self._samples.end

    @property
    def oldest_sample(self) -> int:
        """The first timeline sample the ring still holds (older ones have been overwritten)."""
        return self._samples.start

    def push(self, audio: np.ndarray, arrival: float, filled: bool = False) -> None:
        """Append 16 kHz mono samples that arrived at `arrival` (or silence standing in for missing audio)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not len(audio):
            return
        t0 = time.perf_counter()
        start = self._samples.end
        self._samples.push(audio)
        self.vad.push(audio)
        for name, stream in self._streams.items():
            rows = stream.push(audio)
            self._rings[name].push(rows)
            self.counters.feature_frames += len(rows)
        last = self._arrivals[-1] if self._arrivals else None
        if last is not None and last[1] == start and last[2] == arrival and last[3] == filled:
            self._arrivals[-1] = (last[0], start + len(audio), arrival, filled)
        else:
            self._arrivals.append((start, start + len(audio), arrival, filled))
        oldest = self.oldest_sample
        while self._arrivals and self._arrivals[0][1] <= oldest:
            self._arrivals.popleft()
        c = self.counters
        c.chunks += 1
        c.samples += len(audio)
        c.filled_samples += len(audio) if filled else 0
        c.busy_s += time.perf_counter() - t0

    def audio(self, start: int, stop: int) -> np.ndarray:
        """Timeline samples [start, stop), zeros where nothing was written."""
        return self._samples.get(start, stop)

    def features(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of feature stream `name` (100 rows per second), padded with silence."""
        return self._rings[name].get(start, stop)

    def feature_frames(self, name: str) -> int:
        return self._rings[name].end

    def arrival(self, position: int) -> tuple[float, bool] | None:
        """(arrival time, filled) of the timeline sample at `position`, or None if unknown/forgotten."""
        for start, stop, t, filled in reversed(self._arrivals):
            if start <= position < stop:
                return t, filled
            if stop <= position:
                return None
        return None

    @property
    def nbytes(self) -> int:
        """Memory held by the front end's buffers (constant once the rings are allocated)."""
        n = self._samples.nbytes + sum(r.nbytes for r in self._rings.values())
        n += self.vad.nbytes
        return n + len(self._arrivals) * 64
