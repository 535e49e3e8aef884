"""The frame clock: the one place that says how audio samples map to video frames.

Inside the model audio is mono float32 at 16 kHz and video runs at `fps` (25 by default), so one video
frame spans 640 samples. Anything else (48 kHz stereo from WebRTC, 44.1 kHz files) is resampled at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16_000
DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class FrameClock:
    fps: float = DEFAULT_FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate / self.fps

    def frame_start_sample(self, frame: int) -> int:
        """Index of the first audio sample that belongs to `frame`."""
        return int(round(frame * self.samples_per_frame))

    def frames_for_samples(self, n_samples: int) -> int:
        """Number of whole video frames covered by `n_samples` of audio."""
        return int(n_samples // self.samples_per_frame)
