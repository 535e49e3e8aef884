"""The one backend protocol every renderer implements (PyTorch here; ONNX Runtime and TensorRT in `export`).

    render(audio windows, expression vectors, head poses, tier) -> head crop RGB + alpha at the tier's size

Shapes are static per tier (export needs them): the batch dimension B is the only dynamic one, so several
streaming sessions can share one call. Compositing the crop onto the base plate is a separate cheap step
(`avatar.compose`), never part of a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ideal.avatar.errors import BackendError


@dataclass(frozen=True)
class Tier:
    """A quality tier: the field is evaluated on `rays` x `rays` rays with `samples` samples per ray, and the
    output crop is `output` x `output` pixels (a learned upsampler bridges the two when `refine` is set)."""

    name: str
    rays: int
    samples: int
    output: int
    refine: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "rays": self.rays, "samples": self.samples, "output": self.output,
                "refine": self.refine}

    @classmethod
    def from_dict(cls, d: dict) -> "Tier":
        return cls(name=d["name"], rays=int(d["rays"]), samples=int(d["samples"]), output=int(d["output"]),
                   refine=bool(d.get("refine", False)))


@dataclass
class RenderOutput:
    # may be channel-last views of channel-first buffers: whoever needs contiguous memory makes the copy
    rgb: np.ndarray  # (B, S, S, 3) float32 in [0, 1]
    alpha: np.ndarray  # (B, S, S, 1) float32 in [0, 1]
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage: "eaa", "field", "refine", ...


class RenderUnavailable(BackendError):
    """A backend that renders elsewhere (an inference server) cannot answer this call now: unreachable, too slow,
    or not serving the avatar's models at the moment. Not the session's fault: a streamer repeats the last frame,
    as for a frame that missed its deadline, and renders again once the backend answers."""


@runtime_checkable
class Backend(Protocol):
    """A loaded avatar that renders head crops.

    audio:      (B, window_length, n_mels) float32 causal log-mel windows (`avatar.audio.features`)
    expression: (B, EXPRESSION_DIM) float32 (`avatar.expression`)
    pose:       (B, 3, 4) float32 [s*R | t], canonical head space -> full-frame pixels (`avatar.prepare`)
    """

    name: str

    @property
    def tiers(self) -> dict[str, Tier]: ...

    def render(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray, tier: str) -> RenderOutput: ...
