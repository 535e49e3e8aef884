"""The A/V offset estimator on a real clip: an injected audio delay is recovered; bad inputs are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.errors import InputError
from ideal.avatar.manifest import MOUTH_MODEL_DIR
from ideal.avatar.mouth.offset import estimate_offset

SHIFT_MS = 120.0


@pytest.fixture(scope="module")
def obama_audio_mouth(obama_dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """(audio 16 kHz, tracked mouth opening at 25 fps) of the 7 s excerpt, as recorded (no offset fixed)."""
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.expression import mouth_opening

    return load_audio(obama_dataset / "audio.wav"), mouth_opening(np.load(obama_dataset / "expression.npy"))


def _delayed(audio: np.ndarray, ms: float) -> np.ndarray:
    n = int(round(ms * 16))
    return np.concatenate([np.zeros(n, np.float32), audio[:len(audio) - n]])


@pytest.mark.parametrize("method", ["mouth_model", "energy_envelope"])
def test_injected_delay_is_recovered(obama_audio_mouth, method: str) -> None:
    audio, mouth = obama_audio_mouth
    if method == "mouth_model" and not (MOUTH_MODEL_DIR / "mouth.json").exists():
        pytest.fail("the shipped mouth model is missing")
    model = "auto" if method == "mouth_model" else None
    base = estimate_offset(audio, mouth, 25.0, model=model)
    late = estimate_offset(_delayed(audio, SHIFT_MS), mouth, 25.0, model=model)
    assert base.method == late.method == method
    assert abs((late.offset_ms - base.offset_ms) - SHIFT_MS) <= 30.0, (base, late)
    assert late.curve is not None and len(late.curve) == len(late.lags_ms) == 101
    assert 0.0 < late.confidence <= 1.0


def test_obama_audio_is_late(obama_audio_mouth) -> None:
    """An independent measurement found obama_20s.mp4's audio ~160 ms late; the model-based estimate agrees."""
    audio, mouth = obama_audio_mouth
    est = estimate_offset(audio, mouth, 25.0)
    assert est.method == "mouth_model"
    assert 80.0 <= est.offset_ms <= 260.0, est
    assert est.needs_warning


def test_silent_audio_is_refused(obama_audio_mouth) -> None:
    _, mouth = obama_audio_mouth
    with pytest.raises(InputError, match="silent"):
        estimate_offset(np.zeros(16000 * 5, np.float32), mouth, 25.0)


def test_too_short_clip_is_refused(obama_audio_mouth) -> None:
    audio, mouth = obama_audio_mouth
    with pytest.raises(InputError, match="too short"):
        estimate_offset(audio[:16000], mouth[:25], 25.0)


def test_motionless_mouth_is_refused(obama_audio_mouth) -> None:
    audio, mouth = obama_audio_mouth
    with pytest.raises(InputError, match="never moves"):
        estimate_offset(audio, np.zeros_like(mouth), 25.0)
