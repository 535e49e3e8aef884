"""Writing rendered video: H.264 mp4 with the speech muxed as AAC and a metadata tag, through PyAV.

Every file the project renders carries `comment="synthetic: ideal-nerf"` in its container metadata (the
responsible-use tag; the visible mark is drawn by `avatar.compose.add_synthetic_mark`).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)

SYNTHETIC_TAG = "synthetic: ideal-nerf"


class VideoWriter:
    """Frames in (RGB uint8 (H, W, 3), one per call, at `fps`), an mp4 out; audio is muxed at `close`.

    Use as a context manager. The frame size must be even (H.264 4:2:0); odd sizes are padded by one pixel.
    """

    def __init__(self, path: str | Path, fps: float, audio_16k: np.ndarray | None = None,
                 metadata: dict[str, str] | None = None, crf: int = 18) -> None:
        import av

        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise InputError(f"{self.path}: unsupported output type {self.path.suffix!r}", "write an .mp4 file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self._audio = None if audio_16k is None else np.asarray(audio_16k, dtype=np.float32)
        self._container = av.open(str(self.path), mode="w")
        meta = {"comment": SYNTHETIC_TAG}
        meta.update(metadata or {})
        for k, v in meta.items():
            self._container.metadata[k] = v
        self._video = None
        self._crf = crf
        self._n = 0
        self._audio_stream = None

    def _open_video(self, h: int, w: int) -> None:
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self._video = self._container.add_stream("libx264", rate=self._rate)
        self._video.width, self._video.height = w + (w % 2), h + (h % 2)
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(self._crf), "preset": "veryfast"}
        if self._audio is not None:  # added after the video so players list the video stream first
            self._audio_stream = self._container.add_stream("aac", rate=SAMPLE_RATE)
            self._audio_stream.layout = "mono"

    def write(self, rgb: np.ndarray) -> None:
        import av

        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if self._video is None:
            self._open_video(*rgb.shape[:2])
        h, w = self._video.height, self._video.width
        if rgb.shape[:2] != (h, w):
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._n
        frame.time_base = 1 / self._rate
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._n += 1

    def _mux_audio(self) -> None:
        import av

        n = len(self._audio)
        step = 1024
        for start in range(0, n, step):
            chunk = self._audio[start:start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
        for packet in self._audio_stream.encode(None):
            self._container.mux(packet)

    def close(self) -> None:
        if self._video is not None:
            for packet in self._video.encode(None):
                self._container.mux(packet)
        if self._audio_stream is not None:
            self._mux_audio()
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if exc_type is not None and self.path.exists():
            self.path.unlink()  # never leave a half-written video that looks complete


def read_metadata(path: str | Path) -> dict[str, str]:
    """Container metadata of a media file."""
    import av

    with av.open(str(path)) as c:
        return dict(c.metadata)


def read_frames(path: str | Path) -> np.ndarray:
    """All video frames of a file as (N, H, W, 3) uint8 (for tests and inspection of short clips)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
