"""The outgoing tracks own their timestamps: video and audio of the same streamer frame carry the same time, the
voice survives the 16 -> 48 kHz trip intact and continuous, and a slow consumer loses frames without stalling."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.broadcast import AvatarBroadcast, rgb_to_yuv420p
from server.tracks import AUDIO_PACKET, AUDIO_RATE, VIDEO_CLOCK_RATE
from streamer.session import StreamFrame


class ScriptedSession:
    """Emits `n` frames of a 16 kHz tone, as fast as the consumer takes them."""

    id = "scripted"
    failure = None

    def __init__(self, n: int, fps: float, hz: float = 300.0) -> None:
        self.n, self.fps, self.hz = n, fps, hz

    async def frames(self):
        for i in range(self.n):
            a, b = (int(round(k * 16_000 / self.fps)) for k in (i, i + 1))  # the frame clock's exact span
            t = np.arange(a, b) / 16_000
            audio = (0.5 * np.sin(2 * np.pi * self.hz * t)).astype(np.float32)
            image = np.full((50, 61, 3), i % 256, np.uint8)  # odd width: cropped to even for yuv420p
            yield StreamFrame(i, i / self.fps, image, audio, tier="base", late=False, speech=True, latency_ms=120.0)
            await asyncio.sleep(0)


@pytest.mark.parametrize("fps", [25.0, 30.0])
async def test_video_and_audio_timestamps_are_locked_to_the_frame_index(fps):
    n = 20
    broadcast = AvatarBroadcast(ScriptedSession(n, fps), fps)
    sub = broadcast.subscribe(with_audio=True)
    sub.video._queue = asyncio.Queue(100)  # keep every frame for this check
    await broadcast.run()
    videos = []
    while True:
        try:
            videos.append(await sub.video.recv())
        except Exception:
            break
    audios = []
    while True:
        try:
            audios.append(await sub.audio.recv())
        except Exception:
            break
    assert [f.pts for f in videos] == [round(i * VIDEO_CLOCK_RATE / fps) for i in range(n)]
    assert videos[0].width == 60 and videos[0].height == 50
    # audio: whole 20 ms packets, contiguous from sample 0, covering every frame's span
    assert [f.pts for f in audios] == [k * AUDIO_PACKET for k in range(len(audios))]
    assert all(f.samples == AUDIO_PACKET and f.sample_rate == AUDIO_RATE for f in audios)
    assert len(audios) == (n * AUDIO_RATE // int(fps)) // AUDIO_PACKET
    # frame i's video time equals the time of the audio sample that starts frame i
    for i in range(n):
        assert videos[i].pts / VIDEO_CLOCK_RATE == pytest.approx(round(i * AUDIO_RATE / fps) / AUDIO_RATE, abs=1e-5)
    # the 300 Hz tone comes out at 300 Hz, continuous across frame and packet boundaries
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in audios]).astype(np.float32) / 32768
    steady = pcm[2400:]
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    assert np.fft.rfftfreq(len(steady), 1 / AUDIO_RATE)[spectrum.argmax()] == pytest.approx(300, abs=5)
    assert np.abs(np.diff(steady)).max() < 0.05  # no clicks: a 300 Hz tone of 0.5 moves < 0.02 per sample


async def test_a_slow_video_consumer_drops_oldest_frames_and_never_blocks():
    broadcast = AvatarBroadcast(ScriptedSession(50, 25.0), 25.0)
    slow = broadcast.subscribe(with_audio=False)
    await asyncio.wait_for(broadcast.run(), 5)  # never waits on the subscriber that reads nothing
    assert slow.video.dropped >= 47
    got = [await slow.video.recv(), await slow.video.recv()]
    assert [f.pts for f in got] == [round(i * VIDEO_CLOCK_RATE / 25) for i in (48, 49)]  # the newest survive
    assert broadcast.frames == 50 and broadcast.speech_frames == 50


def test_rgb_to_yuv420p_keeps_the_picture():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, 32:] = 255
    yuv = rgb_to_yuv420p(rgb)
    assert yuv.shape == (96, 64)
    assert yuv[:64, :30].mean() < 20 and yuv[:64, 34:].mean() > 230  # luma: black left, white right


async def test_repeated_pictures_are_counted_once():
    """A late frame repeats the last picture (the same array): the broadcast's picture count says how often the
    avatar really moved, not how many frames the clock ticked."""

    class Repeating(ScriptedSession):
        async def frames(self):
            image = np.zeros((8, 8, 3), np.uint8)
            async for f in super().frames():
                if f.index % 5 == 0:
                    image = np.full((8, 8, 3), f.index, np.uint8)  # a new picture every 5th frame
                f.image = image
                yield f

    broadcast = AvatarBroadcast(Repeating(20, 25.0), 25.0)
    broadcast.subscribe(with_audio=False)
    await broadcast.run()
    assert broadcast.frames == 20 and broadcast.pictures == 4
