"""Per-avatar calibration of the speaker-independent mouth model (retargeting its output range to this face).

A speaker-independent regressor shrinks towards the mean (on the built-in avatar's own speech its outputs have
30-70% of the tracked mouth's spread per field), and every face opens its mouth its own amount. The renderer
learnt this person's range, so a shrunken command gives lips that barely move. The calibration is one scale
per mouth field, fitted on the avatar's training clip: the RMS of the tracked mouth slice over the RMS of the
mouth model's prediction, on speech frames. A scale, not an affine map, so the model's output for silence does
not move the mouth.

In silence the gate hands the mouth to the calibration's `rest`: the mean tracked mouth slice of the training
clip's silent frames. A zero mouth opening is lips touching (the other mouth fields are deltas from the neutral
frame, the clip's most closed mouth), and people rest with their lips a little apart: mouth opening 0.17-0.33
expression units in the three training clips' pauses, against 0.23-0.48 in their speech. Gating to the zero
vector pressed the lips shut in every pause; gating to this face's own rest follows the real mouth better (r of
the gated track against the tracked mouth, leave-one-speaker-out mouth models, whole clips: obama 0.500 ->
0.515, german 0.496 -> 0.562, macron 0.304 -> 0.355; docs/mouth.md). `ideal dub` and `ideal evaluate` use it;
the live streamer closes the mouth in silence unless configured otherwise (`StreamerConfig.silence_mouth`).

Stored in avatar.json `mouth_calibration` (written by `ideal train`, or `ideal mouth calibrate` for an
existing avatar); avatars without one load with `MouthCalibration.identity()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ideal.avatar.expression import SLICES
from ideal.avatar.mouth.gate import gated_mouth_track

MOUTH = SLICES["mouth"].indices
N_MOUTH = SLICES["mouth"].stop - SLICES["mouth"].start
SCALE_RANGE = (0.5, 4.0)  # beyond this the fit says more about noise than about the face
MIN_SPEECH_FRAMES = 50
MIN_SILENT_FRAMES = 25  # one second of pauses; fewer and the rest stays the neutral (zero) mouth


@dataclass(frozen=True)
class MouthCalibration:
    scale: np.ndarray  # (10,) per mouth field
    speech_frames: int = 0
    fitted_with: str = ""  # the mouth model whose outputs were matched
    rest: np.ndarray = field(default_factory=lambda: np.zeros(N_MOUTH, np.float32))  # (10,) the mouth in silence
    silent_frames: int = 0

    @classmethod
    def identity(cls) -> "MouthCalibration":
        return cls(np.ones(N_MOUTH, np.float32))

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.scale == 1.0) and not np.any(self.rest))

    def without_rest(self) -> "MouthCalibration":
        """The same scales with the mouth closed (the zero vector) in silence."""
        return replace(self, rest=np.zeros_like(self.rest))

    def apply(self, raw_mouth: np.ndarray) -> np.ndarray:
        """(..., 10) mouth-model output -> the same in this avatar's range."""
        return np.asarray(raw_mouth, np.float32) * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"scale": [round(float(s), 4) for s in self.scale], "speech_frames": int(self.speech_frames),
                "rest": [round(float(r), 4) for r in self.rest], "silent_frames": int(self.silent_frames),
                "fitted_with": self.fitted_with,
                "definition": "scale, per mouth field: RMS of the tracked mouth / RMS of the mouth model's output "
                              "on the training clip's speech frames, applied to the model's output before gating; "
                              "rest: mean tracked mouth slice of its silent frames, the gate's target in silence"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MouthCalibration":
        scale = np.asarray(d["scale"], np.float32)
        if scale.shape != (N_MOUTH,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"mouth_calibration.scale must be {N_MOUTH} positive numbers, got {d['scale']!r}")
        rest = np.asarray(d.get("rest", np.zeros(N_MOUTH)), np.float32)  # calibrations from before the rest
        if rest.shape != (N_MOUTH,) or not np.all(np.isfinite(rest)):
            raise ValueError(f"mouth_calibration.rest must be {N_MOUTH} finite numbers, got {d['rest']!r}")
        return cls(scale, int(d.get("speech_frames", 0)), str(d.get("fitted_with", "")), rest,
                   int(d.get("silent_frames", 0)))


def fit_calibration(predicted: np.ndarray, tracked: np.ndarray, speech: np.ndarray,
                    fitted_with: str = "", silent: np.ndarray | None = None) -> MouthCalibration:
    """predicted, tracked (N, 10) mouth slices of the same frames, speech (N,) bool -> the per-field scale;
    silent (N,) bool -> the rest mouth. Too few speech frames: scale 1; too few silent ones: rest 0."""
    speech = np.asarray(speech, bool)
    n = int(speech.sum())
    scale = np.ones(N_MOUTH, np.float32)
    if n >= MIN_SPEECH_FRAMES:
        rms = lambda x: np.sqrt(np.mean(np.square(np.asarray(x, np.float64)[speech]), axis=0))  # noqa: E731
        scale = np.clip(rms(tracked) / np.maximum(rms(predicted), 1e-6), *SCALE_RANGE).astype(np.float32)
    silent = np.zeros(len(speech), bool) if silent is None else np.asarray(silent, bool)
    n_silent = int(silent.sum())
    rest = np.zeros(N_MOUTH, np.float32)
    if n_silent >= MIN_SILENT_FRAMES:
        rest = np.asarray(tracked, np.float64)[silent].mean(axis=0).astype(np.float32)
    return MouthCalibration(scale, n, fitted_with, rest, n_silent)


def calibration_from_clip(mouth_model: Any, audio_16k: np.ndarray, mouth_track: np.ndarray, fps: float,
                          frames: np.ndarray | None = None) -> MouthCalibration:
    """Fit on a clip: its audio through `mouth_model`, against its tracked mouth slices (N, 10). Speech frames
    are those the silence gate opens fully (the frames where the mouth is driven at all), silent frames those it
    closes fully; `frames` restricts the fit (e.g. the training split)."""
    from ideal.avatar.mouth.inference import predict_frames

    n = len(mouth_track)
    raw = predict_frames(mouth_model, audio_16k, n, fps)
    _, gate = gated_mouth_track(raw, audio_16k, fps, mouth_model.window.lookahead_ms)
    speech, silent = gate >= 1.0, gate <= 0.0
    if frames is not None:
        keep = np.zeros(n, bool)
        keep[np.asarray(frames)] = True
        speech &= keep
        silent &= keep
    name = Path(mouth_model.path).name if getattr(mouth_model, "path", None) else "mouth model"
    return fit_calibration(raw, mouth_track, speech, fitted_with=name, silent=silent)


def calibration_from_dataset(dataset: str | Path, mouth_model: Any | None = None,
                             frames: np.ndarray | None = None) -> MouthCalibration:
    """Fit on a prepared dataset dir (its audio.wav and expression.npy), with the shipped mouth model unless
    another is given; `frames` restricts the fit (the avatar's training split)."""
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.dataset_manifest import load_dataset_manifest

    dataset = Path(dataset)
    manifest = load_dataset_manifest(dataset)
    if mouth_model is None:
        from ideal.avatar.mouth.model import load_mouth_model

        mouth_model = load_mouth_model()
    expression = np.load(dataset / "expression.npy")
    return calibration_from_clip(mouth_model, load_audio(dataset / "audio.wav"), expression[:, MOUTH],
                                 manifest.fps, frames)
