"""`ideal dub` end to end on the tiny trained avatar: audio in any format, the three expression sources, the
mark and the metadata tag, a short driver that loops, bad avatars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.audio.io import load_audio
from ideal.avatar.video_io import SYNTHETIC_TAG, read_frames, read_metadata
from ideal.cli import main


def _avatar_dir(fixture) -> Path:
    return Path(getattr(fixture, "path", fixture))


def _dub(avatar, mouth_model_dir: Path) -> list[str]:
    """`ideal dub` of the tiny avatar at its cheapest tier with the shipped mouth model."""
    return ["dub", "--mouth-model", str(mouth_model_dir), "--tier", "coarse", "--avatar", str(_avatar_dir(avatar))]


@pytest.fixture(scope="module")
def short_driver(tmp_path_factory, driver_clip) -> Path:
    """1.2 s of a driver clip (30 fps, no audio track): shorter than the speech."""
    from ideal.avatar.prepare.video import iter_frames
    from ideal.avatar.video_io import VideoWriter

    path = tmp_path_factory.mktemp("dub") / "driver.mp4"
    with VideoWriter(path, 30.0) as w:
        for _, _, rgb in iter_frames(driver_clip, 30.0, start=2.0, duration=1.2):
            w.write(rgb)
    return path


def test_dub_from_audio_any_format_with_mark_and_tag(tiny_avatar, mouth_model_dir, speech_m4a, tmp_path,
                                                     capsys):
    out = tmp_path / "dub.mp4"
    drive = tmp_path / "dub.drive.npz"
    assert main([*_dub(tiny_avatar, mouth_model_dir), "--audio", str(speech_m4a),
                 "--save-drive", str(drive), "-o", str(out)]) == 0
    frames = read_frames(out)
    assert len(frames) == 50  # 2 s at 25 fps
    assert read_metadata(out)["comment"] == SYNTHETIC_TAG
    sound = load_audio(out)
    assert abs(len(sound) / 16000 - 2.0) < 0.1 and np.abs(sound).max() > 0.05  # the speech is muxed
    with np.load(drive) as z:
        mouth = z["audio_mouth_open"]
        expression = z["expression"]
    assert mouth.shape == (50,) and mouth.std() > 0  # the mouth moves with the speech
    assert np.allclose(expression[:, 0], mouth)
    # without the mark the same frames differ only where the mark is drawn
    out2 = tmp_path / "nomark.mp4"
    assert main([*_dub(tiny_avatar, mouth_model_dir), "--audio", str(speech_m4a),
                 "--no-mark", "-o", str(out2)]) == 0
    plain = read_frames(out2)
    assert read_metadata(out2)["comment"] == SYNTHETIC_TAG  # the tag stays even without the visible mark
    diff = np.abs(frames.astype(int) - plain.astype(int)).mean(axis=(0, 3))  # (H, W)
    marked = diff > 20
    assert 0.001 < marked.mean() < 0.25  # a visible mark, not a different video


def test_dub_cross_identity_short_driver_loops_and_says_so(tiny_avatar, mouth_model_dir, speech_m4a,
                                                           short_driver, tmp_path, capsys):
    out = tmp_path / "cross.mp4"
    drive = tmp_path / "cross.npz"
    assert main([*_dub(tiny_avatar, mouth_model_dir), "--audio", str(speech_m4a),
                 "--expression", str(short_driver), "--save-drive", str(drive), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shorter than the 2.0 s of audio" in printed and "loops" in printed
    with np.load(drive) as z:
        e = z["expression"]
    n_driver = 30  # 1.2 s at 25 fps
    # ping-pong: frame n_driver + k shows driver frame n_driver - 2 - k (brows/eyes/gaze slices)
    assert np.allclose(e[n_driver + 3, 10:], e[n_driver - 5, 10:])
    # --mouth driver with --on-short hold: the mouth comes from the clip and freezes past its end
    drive2 = tmp_path / "hold.npz"
    assert main([*_dub(tiny_avatar, mouth_model_dir), "--audio", str(speech_m4a),
                 "--expression", str(short_driver), "--mouth", "driver", "--on-short", "hold",
                 "--save-drive", str(drive2), "-o", str(tmp_path / "hold.mp4")]) == 0
    assert "holds its last frame" in capsys.readouterr().out
    with np.load(drive2) as z:
        e2 = z["expression"]
    assert np.allclose(e2[n_driver:, :10], e2[n_driver - 1, :10])


def test_dub_neutral(tiny_avatar, mouth_model_dir, speech_m4a, tmp_path):
    drive = tmp_path / "n.npz"
    assert main([*_dub(tiny_avatar, mouth_model_dir), "--audio", str(speech_m4a),
                 "--expression", "neutral", "--save-drive", str(drive), "-o", str(tmp_path / "n.mp4")]) == 0
    with np.load(drive) as z:
        e = z["expression"]
    assert np.allclose(e[:, 10:14], 0.0)  # neutral brows


def _broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_dub_missing_avatar_files(tiny_avatar, mouth_model_dir, speech_m4a, tmp_path, capsys):
    bad = _broken_copy(_avatar_dir(tiny_avatar), tmp_path / "broken")
    (bad / "weights.pt").unlink()
    assert main(["dub", "--mouth-model", str(mouth_model_dir), "--avatar", str(bad),
                  "--audio", str(speech_m4a), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "weights.pt" in err and "broken" in err
    assert main(["dub", "--mouth-model", str(mouth_model_dir), "--avatar", str(tmp_path / "nowhere"),
                 "--audio", str(speech_m4a), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_dub_incompatible_avatar_version(tiny_avatar, mouth_model_dir, speech_m4a, tmp_path, capsys):
    bad = _broken_copy(_avatar_dir(tiny_avatar), tmp_path / "old")
    m = json.loads((bad / "avatar.json").read_text())
    m["format_version"] = 999
    (bad / "avatar.json").write_text(json.dumps(m))
    assert main(["dub", "--mouth-model", str(mouth_model_dir), "--avatar", str(bad),
                  "--audio", str(speech_m4a), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "format version 999" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
