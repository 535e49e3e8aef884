"""Video decoding onto the output frame clock.

Any source rate (24, 25, 29.97, 30, 60 fps, or variable) is mapped onto `fps` by nearest-timestamp
selection: output frame i shows the source frame whose presentation time is closest to `start + i / fps`.
This never blends frames (a blend would double the lips) and keeps the output in step with the audio clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    source_fps: float
    duration_s: float  # of the video stream, from its first frame
    start_time_s: float  # presentation time of the first video frame in the container's clock
    audio_start_time_s: float | None  # the audio stream's start in the same clock (None: no audio track)
    codec: str
    n_source_frames: int  # as the container states it (0 when unknown)


def _open(path: Path):
    import av

    if not path.exists():
        raise InputError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video", "pass a video file such as clip.mp4")
    try:
        return av.open(str(path))
    except Exception as exc:  # PyAV raises many types (InvalidDataError, FileNotFoundError, ...)
        raise InputError(f"{path}: not a readable video ({exc.__class__.__name__})",
                         "pass an mp4/mov/mkv/webm video, re-encode it with ffmpeg if it is damaged") from exc


def probe_video(path: str | Path, check_packets: bool = True) -> VideoInfo:
    """Stream facts of `path`; raises InputError when it is not a video (and, with `check_packets`, when its
    packets end early or are damaged)."""
    path = Path(path)
    container = _open(path)
    with container:
        if not container.streams.video:
            kind = "an audio file" if container.streams.audio else "a file without a video stream"
            raise InputError(f"{path}: is {kind}, not a video", "pass a video with the speaker's face")
        vs = container.streams.video[0]
        ctx = vs.codec_context
        if not ctx.width or not ctx.height:
            raise InputError(f"{path}: video stream has no frame size (corrupt header)",
                             "re-encode the file with ffmpeg")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        tb = float(vs.time_base) if vs.time_base else 0.0
        start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
        if vs.duration is not None and tb:
            duration = float(vs.duration * tb)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        audio_start = None
        if container.streams.audio:
            a = container.streams.audio[0]
            atb = float(a.time_base) if a.time_base else 0.0
            audio_start = float(a.start_time * atb) if a.start_time is not None and atb else start
        info = VideoInfo(path, int(ctx.width), int(ctx.height), fps, duration, start, audio_start,
                         ctx.name or "?", int(vs.frames or 0))
        if check_packets:
            _check_packets(container, vs, info)
        return info


def _check_packets(container, vs, info: VideoInfo) -> None:
    """Demux (no decoding: milliseconds) the video packets, so a truncated or damaged file fails before any
    tracking work rather than after it."""
    import av

    n = 0
    try:
        for pkt in container.demux(vs):
            if pkt.size:
                n += 1
    except av.error.FFmpegError as exc:
        raise InputError(f"{info.path}: video is corrupt or truncated after {n} frames "
                         f"({n / max(info.source_fps, 1):.1f} s)",
                         "re-encode or re-download it, or pass --duration to use the intact part") from exc
    if n == 0:
        raise InputError(f"{info.path}: the video stream holds no frames", "re-encode or re-download the file")
    if info.n_source_frames and n < 0.9 * info.n_source_frames:
        raise InputError(f"{info.path}: video is truncated ({n} of {info.n_source_frames} frames present)",
                         "re-encode or re-download the file, or pass --duration to use the intact part")


def iter_frames(path: str | Path, fps: float, start: float | None = None,
                duration: float | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (output index, time in s from the first video frame, RGB uint8 (H, W, 3)) on the `fps` clock.

    `start`/`duration` (seconds) select an excerpt. Raises InputError for undecodable or truncated files.
    """
    import av

    path = Path(path)
    info = probe_video(path, check_packets=False)
    t0 = info.start_time_s + (start or 0.0)
    t_end = t0 + duration if duration else None
    step = 1.0 / fps
    out_i = 0
    prev: tuple[float, np.ndarray] | None = None
    n_decoded = 0
    container = _open(path)
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"  # frame threading in the decoder; the rest of prepare is single threaded
        if start:
            container.seek(int(max(t0 - 1.0, 0) / float(vs.time_base)), stream=vs, any_frame=False, backward=True)
        try:
            for frame in container.decode(vs):
                if frame.pts is None:
                    continue
                t = float(frame.pts * vs.time_base)
                n_decoded += 1
                if prev is not None:
                    # Output times nearer to prev than to this frame belong to prev.
                    mid = 0.5 * (prev[0] + t)
                    while t0 + out_i * step < mid and (t_end is None or t0 + out_i * step < t_end - 1e-6):
                        yield out_i, out_i * step, _rgb(prev[1])
                        out_i += 1
                if t_end is not None and t0 + out_i * step >= t_end - 1e-6:
                    break
                prev = (t, frame)
        except av.error.InvalidDataError as exc:
            if n_decoded == 0:
                raise InputError(f"{path}: video stream is corrupt, no frame decodes",
                                 "re-encode or re-download the file") from exc
            raise InputError(f"{path}: video is corrupt or truncated after {n_decoded} frames "
                             f"({n_decoded / max(info.source_fps, 1):.1f} s)",
                             "re-encode it with ffmpeg, or pass --duration to use the part before the damage") from exc
        if n_decoded == 0:
            raise InputError(f"{path}: no video frame could be decoded", "re-encode or re-download the file")
        if prev is not None:
            # The last source frame is shown for one source frame duration.
            last_end = prev[0] + (1.0 / info.source_fps if info.source_fps else step)
            stop = last_end if t_end is None else min(t_end, last_end)
            while t0 + out_i * step < stop - 0.5 * step:
                yield out_i, out_i * step, _rgb(prev[1])
                out_i += 1
    if info.n_source_frames and not start and not duration and n_decoded < 0.9 * info.n_source_frames:
        raise InputError(f"{path}: video is truncated ({n_decoded} of {info.n_source_frames} frames decode)",
                         "re-encode or re-download the file, or pass --duration to use the intact part")


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")
