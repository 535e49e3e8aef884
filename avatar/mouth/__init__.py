"""The speaker-independent audio-to-mouth model and the A/V offset estimator.

Public API (imported lazily so `ideal --help` never loads torch):
- `load_mouth_model(path=None) -> MouthModel`: the shipped model (avatar/assets/mouth_model) or a retrained one.
- `MouthModel.window / .mel_config / .module / .predict(windows)`: (B, L, n_mels) -> (B, 10) mouth slice.
- `predict_frames(model, audio_16k, n_frames, fps)`: the mouth slice for every video frame of a clip.
- `estimate_offset(audio_16k, mouth_open, fps) -> OffsetEstimate` (avatar.mouth.offset).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_mouth_model": "ideal.avatar.mouth.model",
    "save_mouth_model": "ideal.avatar.mouth.model",
    "MouthModel": "ideal.avatar.mouth.model",
    "MouthNet": "ideal.avatar.mouth.model",
    "LIVE_MOUTH_MODEL_DIR": "ideal.avatar.mouth.model",
    "predict_frames": "ideal.avatar.mouth.inference",
    "predict_dense": "ideal.avatar.mouth.inference",
    "estimate_offset": "ideal.avatar.mouth.offset",
    "OffsetEstimate": "ideal.avatar.mouth.offset",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ideal.avatar.mouth' has no attribute {name!r}")
