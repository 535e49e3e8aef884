"""`ideal mouth train / evaluate` end to end on real clips, augmentation, and bad training inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.errors import InputError
from ideal.cli import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mouth_cache")


def test_train_then_evaluate(driver_clip, talking_clip, cache: Path, tmp_path: Path, capsys) -> None:
    """Retraining on two speakers' clips writes a loadable model whose manifest records data and offsets."""
    from ideal.avatar.mouth import load_mouth_model

    out = tmp_path / "model"
    clips = [str(talking_clip), str(driver_clip)]
    code = main(["mouth", "train", "--data", *clips, "-o", str(out), "--steps", "40", "--variants", "1",
                 "--bootstrap-rounds", "1", "--loso", "--cache", str(cache)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "talking_9s" in printed and "A/V offset" in printed
    model = load_mouth_model(out)
    m = json.loads((out / "mouth.json").read_text())
    assert [d["name"] for d in m["training_data"]] == ["talking_9s", "driver_30fps"]
    assert m["av_offset_method"] == "bootstrap" and m["output_fields"][0] == "mouth_open"
    loso = m["metrics"]["loso_mouth_open_r"]  # one model per left-out speaker, scored on that speaker
    assert len(loso["per_speaker"]) == 2 and all(np.isfinite(r) for r in loso["per_speaker"].values())
    assert model.window.length == m["window"]["length"]
    code = main(["mouth", "evaluate", "--model", str(out), "--cache", str(cache), clips[0]])
    assert code == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("talking_9s")][0]
    assert np.isfinite(float(row.split()[2]))


def test_train_refuses_existing_output(driver_clip: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep")
    code = main(["mouth", "train", "--data", str(driver_clip.parent), "-o", str(tmp_path / "x")])
    assert code == 2 and "already exists" in capsys.readouterr().err


def test_video_without_audio_is_refused(driver_clip, tmp_path: Path) -> None:
    from ideal.avatar.mouth.data import load_clip

    mute = tmp_path / "mute.mp4"  # a driver video copied away from its .wav has no speech
    shutil.copy(driver_clip, mute)
    with pytest.raises(InputError, match="no audio track"):
        load_clip(mute, cache_dir=tmp_path)


def test_missing_and_non_video_inputs(tmp_path: Path) -> None:
    from ideal.avatar.mouth.data import find_clips

    with pytest.raises(InputError, match="no such file"):
        find_clips([tmp_path / "nope.mp4"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a video"):
        find_clips([tmp_path / "notes.txt"])
    with pytest.raises(InputError, match="no videos found"):
        find_clips([tmp_path])


def test_augmentation_keeps_labels_in_step(new_speech_wav) -> None:
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.mouth import augmentation as aug

    audio = load_audio(new_speech_wav)[:3 * 16000]
    labels = np.random.default_rng(0).standard_normal((75, 10)).astype(np.float32)
    rng = np.random.default_rng(3)
    for _ in range(3):
        p = aug.draw_params(rng, aug.AugmentConfig())
        out = aug.apply(audio, p, rng)
        new = aug.retime_labels(labels, p.speed)
        assert abs(len(out) / 16000 - len(new) / 25) < 0.05  # audio and labels still cover the same time
        assert np.isfinite(out).all() and np.abs(out).max() <= 0.991
    assert np.allclose(aug.retime_labels(labels, 1.0), labels)
