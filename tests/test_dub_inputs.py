"""`ideal dub` bad inputs that fail before any avatar is loaded, through the real CLI (exit code 2, one line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.audio.io import write_wav
from ideal.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["dub", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_audio_file(tmp_path: Path, capsys):
    code, err = _run(capsys, "--audio", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and "nope.wav: no such file" in err and "\n" not in err


def test_silent_audio(tmp_path: Path, capsys):
    wav = tmp_path / "silence.wav"
    write_wav(wav, np.zeros(16000 * 2, np.float32))
    code, err = _run(capsys, "--audio", str(wav), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and "silence.wav: audio is silent" in err


def test_empty_audio(tmp_path: Path, capsys):
    wav = tmp_path / "empty.wav"
    write_wav(wav, np.zeros(0, np.float32))
    code, err = _run(capsys, "--audio", str(wav), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and "empty.wav" in err and "empty" in err.split("empty.wav", 1)[1]


def test_audio_shorter_than_a_frame(tmp_path: Path, capsys):
    wav = tmp_path / "blip.wav"
    write_wav(wav, 0.3 * np.ones(100, np.float32))
    code, err = _run(capsys, "--audio", str(wav), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and "shorter than one video frame" in err


def test_not_an_audio_file(tmp_path: Path, capsys):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    code, err = _run(capsys, "--audio", str(bad), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and "notes.wav" in err


@pytest.mark.parametrize("argv, message", [
    (["-o", "out.avi"], "must be an .mp4"),
    (["--mouth", "driver"], "--mouth driver needs a driver clip"),
    (["--expression", "missing_driver.mp4"], "missing_driver.mp4: no such driver video"),
])
def test_bad_options(tmp_path: Path, capsys, new_speech_wav, argv, message):
    speech = new_speech_wav
    args = ["--audio", str(speech), *argv]
    if "-o" not in argv:
        args += ["-o", str(tmp_path / "o.mp4")]
    code, err = _run(capsys, *args)
    assert code == 2 and message in err


def test_driver_without_a_face(tmp_path: Path):
    from ideal.avatar.driver_clip import track_driver
    from ideal.avatar.errors import InputError
    from ideal.avatar.video_io import VideoWriter

    video = tmp_path / "wall.mp4"
    y, x = np.mgrid[0:128, 0:128]
    with VideoWriter(video, 25.0) as w:
        for i in range(20):  # a moving gradient: a real video, but nobody in it
            w.write(np.stack([(x + 3 * i) % 256, y * 2, np.full_like(x, 90)], axis=-1).astype(np.uint8))
    with pytest.raises(InputError, match="wall.mp4: no face found in the driver clip"):
        track_driver(video, 25.0, progress=False)


def test_driver_that_is_not_a_video(tmp_path: Path, new_speech_wav, driver_clip):
    from ideal.avatar.driver_clip import track_driver
    from ideal.avatar.errors import InputError

    with pytest.raises(InputError, match="new_speech_16k.wav"):
        track_driver(new_speech_wav, 25.0, progress=False)
