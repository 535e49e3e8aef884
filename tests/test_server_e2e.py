"""`ideal serve` end to end on the real streamer and a real trained avatar, with Python WebRTC clients standing in
for browsers (the Chromium tests are in test_browser_serve.py): speech in, VAD, avatar frames out, the voice
delivered to another participant, metrics, and sessions that leave nothing behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from conftest import live_instances

from ideal.server.app import start_server
from ideal.server.client import join, wait_connected
from ideal.server.config import ServerConfig

pytestmark = pytest.mark.slow
SILENCE_S = 2.0


@pytest.fixture(scope="module")
def speech_48k(new_speech_wav) -> np.ndarray:
    """SILENCE_S of silence then 5 s of real speech, 48 kHz mono (what a browser microphone sends, as mono)."""
    from ideal.avatar.audio.io import load_audio, resample

    speech = load_audio(new_speech_wav)[: 5 * 16_000]
    return resample(np.concatenate([np.zeros(int(SILENCE_S * 16_000), np.float32), speech]), 16_000, 48_000)


async def test_speech_drives_the_avatar_and_reaches_the_room(tiny_avatar: Path, speech_48k: np.ndarray):
    config = ServerConfig(host="127.0.0.1", port=0, avatars=[str(tiny_avatar)], max_sessions=1, max_viewers=1)
    server = await start_server(config)
    try:
        info = server.state.catalog.default.info
        # the server's own render budget reaches the streamer (and so its delay)
        assert info["delay_parts_ms"]["render_budget"] == config.streamer.render_budget_ms
        speaker = await join(server.url, speech_48k, room="e2e")
        await wait_connected(speaker, 30)
        t_start = time.monotonic()
        viewer = await join(server.url, mode="watch", room="e2e", target=speaker.peer_id)
        await wait_connected(viewer, 30)
        peer = server.state.peers.peers[speaker.peer_id]
        flags: list[tuple[float, bool]] = []
        while time.monotonic() - t_start < SILENCE_S + 5.0:
            if peer.broadcast.last:
                flags.append((time.monotonic() - t_start, peer.broadcast.last["speech"]))
            await asyncio.sleep(0.05)
        stats = peer.broadcast.stats()
        session_stats = peer.session.stats.to_dict()
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "metrics") as r:
                metrics = await r.json()
        with pytest.raises(RuntimeError, match="503"):  # one avatar session is this server's limit
            await join(server.url, speech_48k)
        await asyncio.gather(speaker.close(), viewer.close())
    finally:
        await server.stop()

    # VAD: silence first, then speech (the first 0.5 s of speech may not be out yet: the pipeline's delay)
    assert not any(s for t, s in flags if t < SILENCE_S - 0.5), "speech detected in the leading silence"
    assert sum(s for t, s in flags if t > SILENCE_S + 1.0) > 0.5 * sum(1 for t, _ in flags if t > SILENCE_S + 1.0)
    assert stats["speech_frames"] > 50 and stats["frames"] > 100
    assert session_stats  # the streamer's own numbers are exposed to the client (GET /peers/{id})
    # the speaker sees the avatar at its output size, at about the frame rate
    w, h = info["output_size"]
    assert speaker.last_image is not None and speaker.last_image.shape == (h & ~1, w & ~1, 3)
    assert speaker.video_frames > 15 * (SILENCE_S + 4)
    assert speaker.audio_frames == 0  # no echo
    # the viewer sees the avatar and hears the speaker: loud during speech, quiet during silence
    assert viewer.video_frames > 15 * (SILENCE_S + 3)
    rms = np.array(viewer.audio_rms)
    assert len(rms) > 200
    assert np.percentile(rms, 90) > 0.02 and np.percentile(rms[:40], 50) < 0.005
    assert metrics["latency_ms"]["p50"] is not None and metrics["frames"] > 100


async def test_real_sessions_opened_and_dropped_leave_no_connections(tiny_avatar: Path, speech_48k: np.ndarray):
    from aiortc import RTCPeerConnection

    config = ServerConfig(host="127.0.0.1", port=0, avatars=[str(tiny_avatar)], max_sessions=2, idle_timeout_s=2.0)
    server = await start_server(config)
    engine = server.state.catalog.default.engine
    try:
        for _ in range(3):
            peers = [await join(server.url, speech_48k) for _ in range(2)]
            await asyncio.gather(*(wait_connected(p, 30) for p in peers))
            await asyncio.sleep(1.0)
            await asyncio.gather(*(p.close() for p in peers))
            for _ in range(100):  # peers leave the table at once; their clean-up finishes a moment later
                if not server.state.peers.peers and not engine.sessions:
                    break
                await asyncio.sleep(0.1)
        del peers  # the clients' own connections (this process) go too
        assert server.state.peers.peers == {}
        assert engine.sessions == {}  # the streamer closed every session the server opened
        assert live_instances(RTCPeerConnection) == 0
    finally:
        await server.stop()
