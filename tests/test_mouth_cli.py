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


def test_quality_gate_keeps_a_synced_clip_and_leaves_out_audio_that_is_not_its_own(obama_clip: Path,
                                                                                   cache: Path) -> None:
    """The gate on real lag curves: the clip's own speech agrees with its mouth at one offset; the same voice
    saying other words (the audio rotated by 7 s or 13 s) agrees nowhere and is left out, with the reason."""
    from ideal.avatar.mouth.data import load_clip
    from ideal.avatar.mouth.offset import estimate_offset
    from ideal.avatar.mouth.training import ClipGate

    clip = load_clip(obama_clip, cache_dir=cache)
    verdicts = {}
    for shift_s in (0, 7, 13):
        est = estimate_offset(np.roll(clip.audio, shift_s * 16_000), clip.mouth_open, clip.fps, valid=clip.valid)
        verdicts[shift_s] = ClipGate().judge(est.lags_ms, est.curve, est.offset_ms, est.confidence)
    assert verdicts[0]["kept"] and verdicts[0]["r"] > 0.5 and 80 <= verdicts[0]["offset_ms"] <= 260, verdicts
    for shift_s in (7, 13):
        assert not verdicts[shift_s]["kept"] and "peak r" in verdicts[shift_s]["reason"], verdicts


def test_train_leaves_out_the_clips_the_gate_refused(driver_clip, talking_clip, cache: Path, tmp_path: Path,
                                                     capsys) -> None:
    """Offsets and gate verdicts taken from another model's mouth.json: the refused clip trains nothing and is
    reported (printed, and listed with its reason in the new model's mouth.json)."""
    known = {"training_data": [{"name": "talking_9s", "av_offset_ms": 200.0}],
             "clip_gate": {"talking_9s": {"offset_ms": 200.0, "r": 0.6, "r_far": 0.05, "kept": True, "reason": ""},
                           "driver_30fps": {"offset_ms": -90.0, "r": 0.12, "r_far": 0.1, "kept": False,
                                            "reason": "peak r 0.120 < 0.25"}}}
    (tmp_path / "known.json").write_text(json.dumps(known))
    out = tmp_path / "model"
    assert main(["mouth", "train", "--data", str(talking_clip), str(driver_clip), "-o", str(out), "--steps", "20",
                 "--variants", "1", "--offsets", str(tmp_path / "known.json"), "--cache", str(cache)]) == 0
    assert "driver_30fps" in capsys.readouterr().out.split("LEFT OUT")[0]
    m = json.loads((out / "mouth.json").read_text())
    assert [d["name"] for d in m["training_data"]] == ["talking_9s"]
    assert m["training_data"][0]["av_offset_ms"] == 200.0
    assert m["left_out"] == {"driver_30fps": "peak r 0.120 < 0.25"} and not m["clip_gate"]["driver_30fps"]["kept"]


def test_speakers_file_groups_clips(driver_clip, talking_clip, cache: Path, tmp_path: Path) -> None:
    """Clips named by a speakers file are one speaker however their files are named; others use the file name."""
    from ideal.avatar.mouth.pipeline import load_clips, read_speakers

    (tmp_path / "speakers.json").write_text(json.dumps({"talking_9s": "obama", "driver_30fps": "obama"}))
    clips = load_clips([talking_clip, driver_clip], cache_dir=cache, speakers=read_speakers(tmp_path / "speakers.json"))
    assert [c.speaker for c in clips] == ["obama", "obama"]
    assert [c.speaker for c in load_clips([talking_clip], cache_dir=cache)] == ["talking"]
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(InputError, match="speakers file"):
        read_speakers(tmp_path / "bad.json")


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
