"""The per-avatar mouth calibration: fit, application (silence stays closed), storage and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avatar.drive import AudioMouth, gated_mouth_track
from avatar.errors import AvatarError
from avatar.mouth.calibration import (MouthCalibration, calibration_from_dataset, fit_calibration,
                                      load_calibration)
from ideal.cli import main


def test_fit_recovers_the_shrinkage_of_a_regressor_and_ignores_silence():
    rng = np.random.default_rng(0)
    tracked = rng.normal(size=(400, 10)).astype(np.float32)
    predicted = 0.4 * tracked + 0.05 * rng.normal(size=(400, 10))
    speech = np.ones(400, bool)
    speech[:100] = False
    predicted[:100] = 50.0  # silence frames must not count
    cal = fit_calibration(predicted, tracked, speech)
    assert cal.speech_frames == 300
    assert np.allclose(cal.scale, 1 / 0.4, rtol=0.08)
    assert np.all(cal.apply(np.zeros(10)) == 0)  # the closed, neutral mouth stays closed
    assert fit_calibration(predicted, tracked, np.zeros(400, bool)).is_identity  # nothing to fit on
    wild = fit_calibration(1e-4 * tracked, tracked, speech)
    assert wild.scale.max() == 4.0  # clipped: such a ratio says more about noise than about the face


def test_gated_track_applies_the_scale_before_the_gate(shared_data: Path):
    from avatar.audio.io import load_audio

    audio = load_audio(shared_data / "speech" / "test_13s.wav")[: 16000 * 4]
    audio = np.concatenate([np.zeros(16000, np.float32), audio])  # 1 s of silence first
    raw = np.tile(np.linspace(0.1, 1.0, 10, dtype=np.float32), (125, 1))
    plain, gate = gated_mouth_track(raw, audio, 25.0, 40.0)
    scaled, gate2 = gated_mouth_track(raw, audio, 25.0, 40.0, scale=np.full(10, 2.0, np.float32))
    assert np.array_equal(gate, gate2)
    assert np.abs(scaled[:20]).max() == 0  # silence: closed, whatever the scale
    open_ = gate >= 1.0
    assert open_.sum() > 20 and np.allclose(scaled[open_], 2 * plain[open_], atol=1e-5)
    assert AudioMouth(scale=np.ones(10)).scale is not None


def test_calibration_from_real_speech_widens_the_mouth_range(obama_dataset: Path):
    cal = calibration_from_dataset(obama_dataset)
    assert cal.speech_frames >= 50
    assert np.all((cal.scale >= 0.5) & (cal.scale <= 4.0))
    # the speaker-independent model under-opens this face's mouth: its main opening field is scaled up
    assert cal.scale[0] > 1.0 and np.median(cal.scale) > 1.0


def test_calibrate_command_updates_the_avatar_and_refuses_another_dataset(tiny_avatar: Path, obama_dataset: Path,
                                                                          tmp_path: Path, capsys):
    from avatar.loading import load_avatar

    av = shutil.copytree(tiny_avatar, tmp_path / "av")
    m = json.loads((av / "avatar.json").read_text())
    m.pop("mouth_calibration", None)
    (av / "avatar.json").write_text(json.dumps(m))
    assert load_avatar(av).mouth_calibration.is_identity  # avatars from before the calibration
    assert main(["mouth", "calibrate", str(av), "--dataset", str(obama_dataset)]) == 0
    assert "speech frames" in capsys.readouterr().out
    cal = load_avatar(av).mouth_calibration
    assert not cal.is_identity and cal.speech_frames >= 50

    other = shutil.copytree(obama_dataset, tmp_path / "other")
    dm = json.loads((other / "dataset.json").read_text())
    dm["n_frames"] = int(dm["n_frames"]) + 1
    (other / "dataset.json").write_text(json.dumps(dm))
    assert main(["mouth", "calibrate", str(av), "--dataset", str(other)]) == 2
    assert "trained on" in capsys.readouterr().err


def test_trained_avatar_carries_its_calibration_and_a_bad_one_is_refused(tiny_avatar: Path, tmp_path: Path):
    from avatar.loading import load_avatar

    m = json.loads((tiny_avatar / "avatar.json").read_text())
    cal = load_calibration(m)
    assert cal.speech_frames > 0 and cal.fitted_with == "mouth_model"
    bad = shutil.copytree(tiny_avatar, tmp_path / "bad")
    m["mouth_calibration"]["scale"] = [1.0, -2.0]
    (bad / "avatar.json").write_text(json.dumps(m))
    with pytest.raises(AvatarError, match="mouth_calibration"):
        load_avatar(bad)
    assert MouthCalibration.from_dict(MouthCalibration.identity().to_dict()).is_identity
