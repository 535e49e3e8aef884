"""Decoding and resampling: any file, rate or channel count in, 16 kHz mono float32 out."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soxr

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)


def level_db(samples: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean power of float samples in dBFS (full scale 1.0; silence about -120): the level every silence gate
    and noise floor of the project compares. A float for `axis=None`, else one per row."""
    x = np.asarray(samples, dtype=np.float64)
    return 10.0 * np.log10(np.mean(x * x, axis=axis) + 1e-12)


def to_mono(pcm: np.ndarray, channels: int = 1) -> np.ndarray:
    """Interleaved or (n, channels) PCM of any numeric dtype -> mono float32 in [-1, 1]."""
    x = np.asarray(pcm)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float32) / 2147483648.0
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    else:
        x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        return x.mean(axis=1, dtype=np.float32)
    if channels > 1:
        if x.size % channels:
            raise InputError(
                f"interleaved PCM of {x.size} samples is not a whole number of {channels}-channel frames",
                "pass the channel count that matches the buffer",
            )
        return x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


def resample(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole mono signal (offline). Streaming code uses `soxr.ResampleStream` with the same quality."""
    if sample_rate <= 0:
        raise InputError(f"invalid sample rate {sample_rate}", "the sample rate must be a positive number of Hz")
    if sample_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, sample_rate, target_rate, quality="HQ").astype(np.float32)


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the audio of any file PyAV/ffmpeg reads (wav, m4a, mp3, the audio track of an mp4).

    Returns mono float32 at `target_rate`. Raises `InputError` naming the file when it is missing,
    unreadable or has no audio track.
    """
    import av  # imported here: decoding is only needed at the edges

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file", "check the path")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises several exception types for unreadable files
        raise InputError(f"{path}: not a readable audio/video file ({exc.__class__.__name__})",
                         "pass a wav, mp3, m4a or mp4 file") from exc
    with container:
        streams = container.streams.audio
        if not streams:
            raise InputError(f"{path}: has no audio track", "pass the speech separately with --audio FILE.wav")
        stream = streams[0]
        chunks: list[np.ndarray] = []
        rate = stream.codec_context.sample_rate or stream.rate
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                rate = frame.sample_rate
                if arr.dtype.kind in "iu":  # scale integer PCM to [-1, 1] before averaging turns it into floats
                    arr = to_mono(arr.reshape(-1), 1).reshape(arr.shape)
                if frame.format.is_planar:
                    arr = arr.mean(axis=0)
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
                chunks.append(arr.astype(np.float32))
        except av.error.InvalidDataError as exc:
            if not chunks:
                raise InputError(f"{path}: audio track is corrupt", "re-encode or re-download the file") from exc
            log.warning("%s: audio track is truncated; using the %d decodable chunks", path, len(chunks))
    if not chunks:
        raise InputError(f"{path}: audio track is empty", "pass a file with speech in it")
    mono = np.concatenate(chunks)
    return resample(mono, int(rate), target_rate)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
