"""A Python WebRTC client of `ideal serve`, standing in for a browser in tests and benchmarks.

It sends audio like a browser microphone does (48 kHz stereo, 20 ms frames, paced in real time) and counts or
keeps the frames it receives.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)
RATE = 48_000
PACKET = 960


class ArrayMicrophoneTrack(MediaStreamTrack):
    """Plays `audio` ((n,) float32 mono at 48 kHz) as a microphone: s16 stereo 20 ms frames in real time, then
    silence (or the audio again with `loop`)."""

    kind = "audio"

    def __init__(self, audio: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self._pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype(np.int16)
        self._repeat = loop
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._index * PACKET / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n = len(self._pcm)
        begin = self._index * PACKET
        if self._repeat and n:
            idx = (np.arange(begin, begin + PACKET)) % n
            chunk = self._pcm[idx]
        else:
            chunk = np.zeros(PACKET, np.int16)
            part = self._pcm[begin:begin + PACKET]
            chunk[:len(part)] = part
        frame = av.AudioFrame(format="s16", layout="stereo", samples=PACKET)
        frame.planes[0].update(np.repeat(chunk, 2).tobytes())
        frame.sample_rate = RATE
        frame.pts = begin
        frame.time_base = fractions.Fraction(1, RATE)
        self._index += 1
        return frame


@dataclass
class ClientPeer:
    pc: RTCPeerConnection
    answer: dict[str, Any]
    video_frames: int = 0
    audio_frames: int = 0
    audio_rms: list[float] = field(default_factory=list)
    last_image: np.ndarray | None = None
    keep_images: bool = False
    images: list[tuple[float, np.ndarray]] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return self.answer["peer_id"]

    @property
    def headers(self) -> dict[str, str]:
        """What a request on this peer's `/peers/ID/*` routes must carry: its secret from the answer."""
        return {"X-Peer-Secret": self.answer["peer_secret"]}

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.video_frames += 1
                if self.keep_images or self.last_image is None or self.video_frames % 5 == 0:
                    image = frame.to_ndarray(format="rgb24")
                    self.last_image = image
                    if self.keep_images:
                        self.images.append((time.monotonic(), image))
            elif isinstance(frame, av.AudioFrame):
                self.audio_frames += 1
                pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                self.audio_rms.append(float(np.sqrt(np.mean(pcm ** 2))))


async def post_offer(base_url: str, payload: dict[str, Any], token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url.rstrip("/") + "/offer", json=payload, headers=headers) as r:
            return r.status, await r.json()


async def join(base_url: str, audio: np.ndarray | None = None, *, mode: str = "avatar", room: str | None = None,
               target: str | None = None, token: str | None = None, expression: str | None = None,
               avatar: str | None = None, loop_audio: bool = False, keep_images: bool = False) -> ClientPeer:
    """Connect like the browser client does; raises RuntimeError with the server's reason when refused."""
    pc = RTCPeerConnection()
    if mode == "avatar":
        pc.addTrack(ArrayMicrophoneTrack(np.zeros(0, np.float32) if audio is None else audio, loop=loop_audio))
        pc.addTransceiver("video", direction="recvonly")
    else:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
    peer = ClientPeer(pc, {}, keep_images=keep_images)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peer._tasks.append(asyncio.ensure_future(peer._consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    payload = {"sdp": pc.localDescription.sdp, "type": "offer", "mode": mode, "room": room, "target": target,
               "expression": expression, "avatar": avatar, "name": "python-client"}
    status, answer = await post_offer(base_url, payload, token)
    if status != 200:
        await pc.close()
        raise RuntimeError(f"{status}: {answer.get('error')}")
    peer.answer = answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return peer


async def wait_connected(peer: ClientPeer, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while peer.pc.connectionState != "connected":
        if time.monotonic() > deadline:
            raise TimeoutError(f"not connected after {timeout} s (state {peer.pc.connectionState})")
        await asyncio.sleep(0.05)


async def run_load(url: str, sessions: int, viewers: int, audio: np.ndarray, duration: float, room: str,
                   token: str | None = None) -> dict[str, Any]:
    """`sessions` avatar peers speaking `audio` (looped) in `room`, plus `viewers` watching the first one; after
    `duration` s, the frames each received per second (measured after a 2 s settling time)."""
    speakers = [await join(url, audio, room=room, token=token, loop_audio=True) for _ in range(sessions)]
    await asyncio.gather(*(wait_connected(p, 30) for p in speakers))
    watchers = [await join(url, mode="watch", room=room, target=speakers[0].peer_id, token=token)
                for _ in range(viewers)] if speakers else []
    await asyncio.gather(*(wait_connected(p, 30) for p in watchers))
    await asyncio.sleep(2.0)
    peers = speakers + watchers
    start = [p.video_frames for p in peers]
    t0 = time.monotonic()
    await asyncio.sleep(duration)
    elapsed = time.monotonic() - t0
    fps = [(p.video_frames - s) / elapsed for p, s in zip(peers, start)]
    await asyncio.gather(*(p.close() for p in peers))
    return {"speaker_fps": fps[:sessions], "viewer_fps": fps[sessions:]}


def main(argv: list[str] | None = None) -> int:
    """`python -m ideal.server.client URL --sessions N --viewers M --wav FILE --duration S`: load for benchmarks; prints
    one JSON line."""
    import argparse

    from ideal.avatar.audio.io import load_audio, resample
    from ideal.avatar.clock import SAMPLE_RATE

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("url")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--viewers", type=int, default=0)
    p.add_argument("--wav", required=True, help="speech the speakers say (looped)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--room", default="bench")
    p.add_argument("--token")
    args = p.parse_args(argv)
    audio = resample(load_audio(args.wav), SAMPLE_RATE, RATE)
    result = asyncio.run(run_load(args.url, args.sessions, args.viewers, audio, args.duration, args.room,
                                  args.token))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
