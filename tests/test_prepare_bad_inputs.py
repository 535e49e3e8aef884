"""Every bad input of `ideal prepare` gets a one-line error naming the file, exit code 2, and leaves no
dataset (nor a half-written temp dir) behind. The inputs are real footage, edited the way users break it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.errors import InputError

FPS = 25


@pytest.fixture(scope="module")
def obama_frames(obama_clip) -> np.ndarray:
    """The first 8 s of obama_20s.mp4 at 225x225 (200, 225, 225, 3) uint8 RGB, to edit into bad clips."""
    import cv2

    from ideal.avatar.prepare.video import iter_frames

    return np.stack([cv2.resize(f, (226, 226), interpolation=cv2.INTER_AREA)
                     for _, _, f in iter_frames(obama_clip, FPS, duration=8.0)])


@pytest.fixture(scope="module")
def speech_wav(obama_clip, tmp_path_factory) -> Path:
    from ideal.avatar.audio.io import load_audio, write_wav

    path = tmp_path_factory.mktemp("audio") / "obama.wav"
    write_wav(path, load_audio(obama_clip)[: 8 * 16000])
    return path


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Video-only H.264 mp4 of RGB frames (N, H, W, 3)."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.height, st.width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
        st.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:st.height, :st.width]),
                                                            format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def run_cli(video: Path, out: Path, *extra: str) -> int:
    """`ideal prepare`; clips here are 3-4 s to stay fast, so the minimum length is lowered unless a test
    sets it (the minimum itself is tested with the default)."""
    from ideal.cli import main

    if "--min-duration-s" not in extra:
        extra = ("--min-duration-s", "3", *extra)
    return main(["-q", "prepare", str(video), "-o", str(out), "--no-av-offset", *extra])


def assert_fails(video: Path, tmp_path: Path, capsys, pattern: str, *extra: str) -> None:
    out = tmp_path / "ds"
    assert run_cli(video, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(video) in err, err
    assert pattern in err, err
    assert not out.exists() and not list(tmp_path.glob(".ds.partial-*"))


def test_not_a_video(tmp_path: Path, capsys, speech_wav: Path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 100)
    assert_fails(txt, tmp_path, capsys, "not a readable video")
    assert_fails(speech_wav, tmp_path, capsys, "is an audio file, not a video")


def test_missing_file(tmp_path: Path, capsys):
    assert_fails(tmp_path / "nope.mp4", tmp_path, capsys, "no such file")


def test_truncated_and_corrupt_files(tmp_path: Path, capsys, obama_clip):
    data = obama_clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    assert_fails(cut, tmp_path, capsys, "")
    # The same bytes with the index first (faststart): the header opens, the frames stop early.
    import av

    fast = tmp_path / "fast.mp4"
    with av.open(str(obama_clip)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
        for packet in src.demux(*src.streams):
            if packet.dts is not None and packet.stream.index in streams:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    fdata = fast.read_bytes()
    cut2 = tmp_path / "cut_fast.mp4"
    cut2.write_bytes(fdata[: len(fdata) // 2])
    assert_fails(cut2, tmp_path, capsys, "truncated")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(data[:64] + bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8)))
    assert_fails(garbage, tmp_path, capsys, "")


def test_no_audio_track_unless_audio_is_given(tmp_path: Path, capsys, obama_frames, speech_wav):
    video = write_video(tmp_path / "silent.mp4", obama_frames[:80])
    assert_fails(video, tmp_path, capsys, "has no audio track")
    assert "--audio" in str(InputError("x", "pass the speech separately with --audio FILE.wav"))
    out = tmp_path / "ok"
    assert run_cli(video, out, "--audio", str(speech_wav)) == 0
    assert (out / "dataset.json").exists()


def test_video_without_a_face(tmp_path: Path, capsys, obama_clip: Path, speech_wav):
    import cv2

    from ideal.avatar.prepare.video import iter_frames

    # The curtain and flag at the left of the Oval Office clip, where no face ever is.
    frames = np.stack([cv2.resize(f[0:220, 0:100], (112, 224)) for _, _, f in
                       iter_frames(obama_clip, FPS, duration=3.5)])
    video = write_video(tmp_path / "noface.mp4", frames)
    assert_fails(video, tmp_path, capsys, "no face found in any frame", "--audio", str(speech_wav))


def test_faceless_stretch_fails_and_names_the_times_short_gaps_are_interpolated(
        tmp_path: Path, capsys, obama_frames, speech_wav):
    frames = obama_frames[:90].copy()
    frames[30:70] = 0  # 1.6 s of black: the face is gone
    video = write_video(tmp_path / "gap.mp4", frames)
    assert_fails(video, tmp_path, capsys, "no face in 1.20-2.80s", "--audio", str(speech_wav))

    frames = obama_frames[:90].copy()
    frames[60:64] = 0  # 0.16 s: interpolated
    video = write_video(tmp_path / "blink_gap.mp4", frames)
    out = tmp_path / "ok"
    assert run_cli(video, out, "--audio", str(speech_wav)) == 0
    interp = np.load(out / "interpolated.npy")
    assert interp[60:64].all() and interp.sum() == 4
    import json

    m = json.loads((out / "dataset.json").read_text())
    assert m["faces"]["interpolated"] == 4 and m["faces"]["interpolated_ranges_s"] == [[2.4, 2.56]]
    lm = np.load(out / "landmarks.npy")
    assert np.isfinite(lm).all()
    # the filled frames lie between their neighbours
    assert np.abs(lm[61:63] - 0.5 * (lm[59] + lm[65])).max() < 10


def test_two_people(tmp_path: Path, capsys, obama_frames, speech_wav):
    frames = np.concatenate([obama_frames[:80], obama_frames[100:180, :, ::-1]], axis=2)  # side by side
    video = write_video(tmp_path / "two.mp4", frames)
    assert_fails(video, tmp_path, capsys, "two or more people", "--audio", str(speech_wav))


def test_clip_shorter_than_the_minimum(tmp_path: Path, capsys, obama_frames, speech_wav):
    video = write_video(tmp_path / "short.mp4", obama_frames[:75])  # 3 s
    assert_fails(video, tmp_path, capsys, "shorter than the 5 s minimum", "--audio", str(speech_wav),
                 "--min-duration-s", "5")


def test_moving_camera_warns(tmp_path: Path, caplog, obama_clip: Path, speech_wav):
    import cv2

    from ideal.avatar.prepare.video import iter_frames

    # A pan: a 340 px window sliding across the 450 px clip, 1.1 px per frame.
    frames = np.stack([cv2.resize(f[30:370, int(1.1 * i):int(1.1 * i) + 340], (224, 224))
                       for i, _, f in iter_frames(obama_clip, FPS, duration=4.0)])
    video = write_video(tmp_path / "pan.mp4", frames)
    out = tmp_path / "pan_ds"
    with caplog.at_level(logging.WARNING):
        assert run_cli(video, out, "--audio", str(speech_wav)) == 0
    assert any("camera may be moving" in r.getMessage() for r in caplog.records)
    import json

    assert json.loads((out / "dataset.json").read_text())["stats"]["background"]["moving_camera_suspected"]


def test_existing_output_needs_overwrite(tmp_path: Path, capsys, obama_frames, speech_wav):
    video = write_video(tmp_path / "ok.mp4", obama_frames[:80])
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli(video, out, "--audio", str(speech_wav)) == 2
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").exists()
