"""The per-avatar mouth calibration: fit, application (silence rests the mouth at the face's rest), storage and the
CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.mouth.gate import AudioMouth, gated_mouth_track
from ideal.avatar.errors import AvatarError
from ideal.avatar.mouth.calibration import MouthCalibration, calibration_from_dataset, fit_calibration
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
    assert np.all(cal.apply(np.zeros(10)) == 0)  # a scale: the model's silence output does not move the mouth
    assert not np.any(cal.rest) and cal.silent_frames == 0  # no silent frames given: the neutral rest
    assert fit_calibration(predicted, tracked, np.zeros(400, bool)).is_identity  # nothing to fit on
    rest = np.linspace(0.1, 0.3, 10, dtype=np.float32)
    tracked[:100] = rest + 0.01 * rng.normal(size=(100, 10))
    with_rest = fit_calibration(predicted, tracked, speech, silent=~speech)
    assert with_rest.silent_frames == 100 and np.allclose(with_rest.rest, rest, atol=0.005)
    assert np.allclose(with_rest.scale, cal.scale)  # the rest does not change the scale
    few = ~speech & (np.arange(400) < 10)
    assert not np.any(fit_calibration(predicted, tracked, speech, silent=few).rest)  # 10 frames: too few
    wild = fit_calibration(1e-4 * tracked, tracked, speech)
    assert wild.scale.max() == 4.0  # clipped: such a ratio says more about noise than about the face


def test_gated_track_applies_the_scale_before_the_gate_and_rests_in_silence(new_speech_wav):
    from ideal.avatar.audio.io import load_audio

    audio = load_audio(new_speech_wav)[: 16000 * 4]
    audio = np.concatenate([np.zeros(16000, np.float32), audio])  # 1 s of silence first
    raw = np.tile(np.linspace(0.1, 1.0, 10, dtype=np.float32), (125, 1))
    plain, gate = gated_mouth_track(raw, audio, 25.0, 40.0)
    assert np.abs(plain[:20]).max() == 0  # no calibration: the neutral mouth in silence
    rest = np.linspace(0.05, 0.25, 10, dtype=np.float32)
    cal = MouthCalibration(np.full(10, 2.0, np.float32), rest=rest)
    scaled, gate2 = gated_mouth_track(raw, audio, 25.0, 40.0, calibration=cal)
    assert np.array_equal(gate, gate2)
    assert np.allclose(scaled[:20], rest)  # silence: the face's rest, whatever the scale
    settled = np.convolve(gate >= 1.0, np.ones(12), "full")[:len(gate)] == 12  # open 12 frames: smoothing done
    assert settled.sum() > 20 and np.allclose(scaled[settled], 2 * plain[settled], atol=1e-4)
    # a VAD's "no speech" holds the rest even where the level gate would open, and the gate keeps its floor
    am = AudioMouth(calibration=cal)
    loud = audio[16000 * 2: 16000 * 2 + 640 + 640]
    held = [am.step(raw[0], loud, voiced=False) for _ in range(5)]
    assert np.allclose(held[-1], rest) and am.gate.gain == 0.0


def test_calibration_from_real_speech_widens_the_mouth_range(obama_dataset: Path):
    cal = calibration_from_dataset(obama_dataset)
    assert cal.speech_frames >= 50
    # obama rests with his lips a little apart: the silent frames' mean opening is above the neutral frame's
    assert cal.silent_frames >= 25 and 0.1 < cal.rest[0] < 0.5
    assert np.all((cal.scale >= 0.5) & (cal.scale <= 4.0))
    # the speaker-independent model under-opens this face's mouth: its main opening field is scaled up
    assert cal.scale[0] > 1.0 and np.median(cal.scale) > 1.0


def test_calibrate_command_updates_the_avatar_and_refuses_another_dataset(tiny_avatar: Path, obama_dataset: Path,
                                                                          tmp_path: Path, capsys):
    from ideal.avatar.loading import load_avatar

    av = shutil.copytree(tiny_avatar, tmp_path / "av")
    m = json.loads((av / "avatar.json").read_text())
    m.pop("mouth_calibration", None)
    (av / "avatar.json").write_text(json.dumps(m))
    assert load_avatar(av).mouth_calibration.is_identity  # avatars from before the calibration
    assert main(["mouth", "calibrate", str(av), "--dataset", str(obama_dataset)]) == 0
    assert "speech frames" in capsys.readouterr().out
    cal = load_avatar(av).mouth_calibration
    assert not cal.is_identity and cal.speech_frames >= 50
    written = json.loads((av / "avatar.json").read_text())["mouth_calibration"]
    assert len(written["rest"]) == 10 and written["silent_frames"] == cal.silent_frames > 0

    other = shutil.copytree(obama_dataset, tmp_path / "other")
    dm = json.loads((other / "dataset.json").read_text())
    dm["n_frames"] = int(dm["n_frames"]) + 1
    (other / "dataset.json").write_text(json.dumps(dm))
    assert main(["mouth", "calibrate", str(av), "--dataset", str(other)]) == 2
    assert "trained on" in capsys.readouterr().err


def test_trained_avatar_carries_its_calibration_and_a_bad_one_is_refused(tiny_avatar: Path, tmp_path: Path):
    from ideal.avatar.loading import load_avatar

    m = json.loads((tiny_avatar / "avatar.json").read_text())
    cal = MouthCalibration.from_dict(m["mouth_calibration"])
    assert cal.speech_frames > 0 and cal.fitted_with == "mouth_model"
    bad = shutil.copytree(tiny_avatar, tmp_path / "bad")
    m["mouth_calibration"]["scale"] = [1.0, -2.0]
    (bad / "avatar.json").write_text(json.dumps(m))
    with pytest.raises(AvatarError, match="mouth_calibration"):
        load_avatar(bad)
    m["mouth_calibration"]["scale"] = [1.0] * 10
    m["mouth_calibration"]["rest"] = [0.1, float("nan")]
    (bad / "avatar.json").write_text(json.dumps(m))
    with pytest.raises(AvatarError, match="rest"):
        load_avatar(bad)
    assert MouthCalibration.from_dict(MouthCalibration.identity().to_dict()).is_identity
    old = {"scale": [1.5] * 10, "speech_frames": 80}  # written before the rest mouth existed
    assert not np.any(MouthCalibration.from_dict(old).rest)
