"""Session-scoped real data for the tests (owned by the prepare stage).

Everything here comes from `tests/data/obama_20s.mp4`, the public-domain clip shipped with the repository, so a
fresh clone runs the whole pipeline on real footage without `../shared`:

- `obama_dataset`: the real `ideal prepare` on the first 7 s (175 frames at 25 fps, 450x450). The A/V offset
  estimator is skipped (`no_av_offset`) so the fixture is deterministic and does not depend on another stage; no
  preview, to keep it cheap (~10 s). The tiny trained avatar builds on it.
- `new_speech_wav`: 10 s of real speech the dataset (and so the tiny avatar) never heard: the clip's audio from
  10 s on, as a 16 kHz mono WAV.
- `speech_44k_stereo_wav`: 7.5 s of that speech as a 44.1 kHz stereo WAV (a format the model does not use);
  `speech_m4a`: 2 s of it as 44.1 kHz stereo AAC.
- `driver_clip`: a 30 fps, 256x256, video-only mp4 of 8-20 s with its speech beside it as a 16 kHz WAV (the layout
  of a driver clip whose sound was recorded separately).
- `talking_clip`: 0-9 s re-encoded as a 25 fps mp4 with its own audio track.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
OBAMA_CLIP = TEST_DATA / "obama_20s.mp4"
OBAMA_EXCERPT_S = 7.0
NEW_SPEECH_START_S = 10.0


@pytest.fixture(scope="session")
def obama_clip() -> Path:
    """The shipped public-domain clip (20.0 s, 450x450, 25 fps, AAC 48 kHz stereo)."""
    assert OBAMA_CLIP.is_file(), f"{OBAMA_CLIP} is missing from this checkout"
    return OBAMA_CLIP


@pytest.fixture(scope="session")
def obama_audio(obama_clip: Path) -> np.ndarray:
    """The clip's whole audio track, 16 kHz mono float32."""
    from ideal.avatar.audio.io import load_audio

    return load_audio(obama_clip)


@pytest.fixture(scope="session")
def obama_dataset(obama_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset dir of the first 7 s of obama_20s.mp4 (175 frames at 25 fps, 450x450)."""
    from ideal.avatar.prepare.dataset import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("datasets") / "obama"
    prepare_dataset(PrepareConfig(video=obama_clip, output=out, start=0.0, duration=OBAMA_EXCERPT_S,
                                  no_av_offset=True, progress=False))
    return out


@pytest.fixture(scope="session")
def new_speech_wav(obama_audio: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of real speech the obama_dataset never contained, 16 kHz mono WAV."""
    from ideal.avatar.audio.io import write_wav

    path = tmp_path_factory.mktemp("speech") / "new_speech_16k.wav"
    write_wav(path, obama_audio[int(NEW_SPEECH_START_S * 16_000):])
    return path


@pytest.fixture(scope="session")
def speech_44k_stereo_wav(obama_audio: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7.5 s of the new speech as 44.1 kHz stereo 16-bit PCM; the channels differ (a real stereo file)."""
    import soundfile as sf

    from ideal.avatar.audio.io import resample

    mono = resample(obama_audio[int(NEW_SPEECH_START_S * 16_000):][: int(7.5 * 16_000)], 16_000, 44_100)
    stereo = np.stack([mono, 0.8 * np.roll(mono, 3)], axis=1)
    path = tmp_path_factory.mktemp("speech") / "speech_44k_stereo.wav"
    sf.write(path, stereo, 44_100, subtype="PCM_16")
    return path


def _write_clip(path: Path, source: Path, fps: float, start: float, duration: float, size: int | None,
                audio_16k: np.ndarray | None) -> Path:
    import cv2

    from ideal.avatar.prepare.video import iter_frames
    from ideal.avatar.video_io import VideoWriter

    with VideoWriter(path, fps, audio_16k=audio_16k) as writer:
        for _, _, rgb in iter_frames(source, fps, start=start, duration=duration):
            writer.write(rgb if size is None else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
    return path


@pytest.fixture(scope="session")
def driver_clip(obama_clip: Path, obama_audio: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s (8-20 s) at 30 fps, 256x256, no audio track; its speech is the .wav beside it."""
    from ideal.avatar.audio.io import write_wav

    folder = tmp_path_factory.mktemp("driver")
    path = _write_clip(folder / "driver_30fps.mp4", obama_clip, 30.0, 8.0, 12.0, 256, None)
    write_wav(path.with_suffix(".wav"), obama_audio[8 * 16_000: 20 * 16_000])
    return path


@pytest.fixture(scope="session")
def talking_clip(obama_clip: Path, obama_audio: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0-9 s as a 25 fps mp4 with its own (AAC) audio track."""
    folder = tmp_path_factory.mktemp("talking")
    return _write_clip(folder / "talking_9s.mp4", obama_clip, 25.0, 0.0, 9.0, None, obama_audio[: 9 * 16_000])


@pytest.fixture(scope="session")
def speech_m4a(new_speech_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of the new speech re-encoded as a 44.1 kHz stereo AAC .m4a (not the model's 16 kHz mono wav)."""
    import av

    from ideal.avatar.audio.io import load_audio, resample

    x = resample(load_audio(new_speech_wav)[16_000 * 1: 16_000 * 3], 16_000, 44_100)
    path = tmp_path_factory.mktemp("speech") / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44_100)
        stream.layout = "stereo"
        frame_len = 1024
        for i in range(0, len(x), frame_len):
            chunk = np.stack([x[i:i + frame_len], 0.5 * x[i:i + frame_len]]).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = 44_100
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
