"""`ideal bench --mode webrtc`: a real aiortc client against `ideal serve` on loopback.

Per trial a *speaker* peer joins a room (its microphone track sends the bench audio: silence, then speech) and
a *watcher* peer joins the same room to receive the speaker's avatar with its voice. Both are real
`RTCPeerConnection`s; the server runs in-process (`server.app.start_server`) on 127.0.0.1.

Measured on what the clients decode, with the client's own clock:
- end-to-end latency: from the moment the microphone track hands aiortc the 20 ms frame holding the speech
  onset, to the first received video frame whose mouth has opened (tracked on the decoded frames with the
  project's face tracker, `ideal.bench.mouth`), for the speaker's own view and for the watcher;
- A/V sync (watcher): arrival of that first mouth-open frame minus arrival of the returned audio's speech
  onset (positive: the picture lags the sound);
- server start-up time (engine load + warm-up + listening) and time to first frame after a peer connects.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.bench.report import distribution

log = logging.getLogger(__name__)

RATE = 48_000
PACKET = 960  # 20 ms at 48 kHz, as a browser microphone sends
LATE_AUDIO_WAIT_S = 5.0  # beyond the speech + 1 s, how long a trial waits for the watcher's returned speech


def _mic_track_class() -> type:
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class OnsetMicrophoneTrack(MediaStreamTrack):
        """Silence until `start()`, then `audio` (48 kHz mono float) as s16 stereo 20 ms frames in real time,
        then silence; records when the frame holding `onset_sample` was handed to the sender."""

        kind = "audio"

        def __init__(self, audio: np.ndarray, onset_sample: int) -> None:
            super().__init__()
            self._pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            self._onset = onset_sample
            self._index = 0
            self._clock0: float | None = None
            self._play_from: int | None = None  # packet index where the audio starts
            self.onset_sent_at: float | None = None
            self.finished = asyncio.Event()

        def start(self) -> None:
            self._play_from = self._index + 1

        async def recv(self) -> Any:
            import av

            if self.readyState != "live":
                raise MediaStreamError
            if self._clock0 is None:
                self._clock0 = time.monotonic()
            wait = self._clock0 + (self._index + 1) * PACKET / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a frame leaves when its last sample has been "captured"
            chunk = np.zeros(PACKET, np.int16)
            if self._play_from is not None and self._index >= self._play_from:
                begin = (self._index - self._play_from) * PACKET
                part = self._pcm[begin:begin + PACKET]
                chunk[:len(part)] = part
                if self.onset_sent_at is None and begin <= self._onset < begin + PACKET:
                    self.onset_sent_at = time.monotonic()
                if begin + PACKET >= len(self._pcm):
                    self.finished.set()
            frame = av.AudioFrame(format="s16", layout="stereo", samples=PACKET)
            frame.planes[0].update(np.repeat(chunk, 2).tobytes())
            frame.sample_rate = RATE
            frame.pts = self._index * PACKET
            frame.time_base = fractions.Fraction(1, RATE)
            self._index += 1
            return frame

    return OnsetMicrophoneTrack


@dataclass
class Received:
    """What one client peer decoded, with arrival times on the client's monotonic clock."""

    video: list[tuple[float, Any]] = field(default_factory=list)  # (arrival, decoded av.VideoFrame)
    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival, rms)
    first_video_at: float | None = None
    keep_from: float = float("inf")  # keep decoded images from this time on (bounded memory)
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                if self.first_video_at is None:
                    self.first_video_at = now
                if now >= self.keep_from:
                    # converted to RGB after the trial: on a starved CPU the conversion would delay this client's
                    # own receiving (the audio's arrival included) by the time it takes
                    self.video.append((now, frame))
            else:
                pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                self.audio.append((now, float(np.sqrt(np.mean(pcm ** 2)))))


async def _connect(base_url: str, pc: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from aiortc import RTCSessionDescription

    from ideal.server.client import post_offer

    await pc.setLocalDescription(await pc.createOffer())
    status, answer = await post_offer(base_url, {**payload, "sdp": pc.localDescription.sdp, "type": "offer"})
    if status != 200:
        raise RuntimeError(f"server refused the offer ({status}: {answer.get('error')})")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return answer


def returned_audio_onset(audio: list[tuple[float, float]], start: float, onset: float) -> float | None:
    """Arrival of the returned audio's speech onset: the first frame received after the onset was sent that is
    20 dB over the silence received between `start` and the onset (median RMS, floored at 1e-4); None if none."""
    audio = [(t, r) for t, r in audio if t >= start]
    silent = [r for t, r in audio if t < onset]
    floor = max(float(np.median(silent)) if silent else 0.0, 1e-4)
    return next((t for t, r in audio if t >= onset and r > 10 * floor), None)


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"webrtc bench: {what} not within {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def run_trial(base_url: str, audio_48k: np.ndarray, onset_48k: int, room: str,
                    speech_s: float) -> dict[str, Any]:
    """One speaker + one watcher; returns raw timings and the decoded frames around the onset."""
    from aiortc import RTCPeerConnection

    track = _mic_track_class()(audio_48k, onset_48k)
    speaker_pc, watcher_pc = RTCPeerConnection(), RTCPeerConnection()
    speaker, watcher = Received(), Received()
    speaker_pc.addTrack(track)
    speaker_pc.addTransceiver("video", direction="recvonly")
    watcher_pc.addTransceiver("video", direction="recvonly")
    watcher_pc.addTransceiver("audio", direction="recvonly")
    for pc, rec in ((speaker_pc, speaker), (watcher_pc, watcher)):
        pc.on("track", lambda t, rec=rec: rec.tasks.append(asyncio.ensure_future(rec.consume(t))))
    out: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        answer = await _connect(base_url, speaker_pc, {"mode": "avatar", "room": room, "name": "bench-speaker"})
        await _wait(lambda: speaker_pc.connectionState == "connected", 20, "speaker connection")
        connected = time.monotonic()
        await _wait(lambda: speaker.first_video_at is not None, 20, "first video frame")
        out["connect_s"] = connected - t0
        out["first_frame_after_connect_s"] = speaker.first_video_at - connected
        await _connect(base_url, watcher_pc, {"mode": "watch", "room": room, "target": answer["peer_id"],
                                              "name": "bench-watcher"})
        await _wait(lambda: watcher_pc.connectionState == "connected" and watcher.first_video_at is not None, 20,
                    "watcher's first frame")
        await asyncio.sleep(0.3)  # let both streams settle on the silence
        start = time.monotonic()
        speaker.keep_from = watcher.keep_from = start
        track.start()
        await _wait(lambda: track.onset_sent_at is not None, 20, "speech onset sent")
        await asyncio.sleep(min(speech_s, 2.5) + 1.0)  # speech plus the pipeline's delay
        # an overloaded machine returns the voice later still: wait for it (bounded) rather than report silence
        try:
            await _wait(lambda: returned_audio_onset(watcher.audio, start, track.onset_sent_at) is not None,
                        LATE_AUDIO_WAIT_S, "the watcher's returned speech")
        except TimeoutError as exc:
            log.warning("%s", exc)
        out.update(start=start, onset_sent_at=track.onset_sent_at, speaker=speaker, watcher=watcher,
                   peer_id=answer["peer_id"])
    finally:
        for rec in (speaker, watcher):
            for t in rec.tasks:
                t.cancel()
        await speaker_pc.close()
        await watcher_pc.close()
    return out


def analyse_trial(trial: dict[str, Any], margin: float) -> dict[str, Any]:
    """Latencies from a trial's decoded frames (see the module docstring)."""
    from ideal.bench.mouth import av_lag_ms, mouth_onset, mouth_openings

    onset = trial["onset_sent_at"]
    res: dict[str, Any] = {"connect_s": round(trial["connect_s"], 3),
                           "first_frame_after_connect_s": round(trial["first_frame_after_connect_s"], 3)}
    for who in ("speaker", "watcher"):
        rec: Received = trial[who]
        times = np.array([t for t, _ in rec.video])
        openings = mouth_openings([frame.to_ndarray(format="rgb24") for _, frame in rec.video])
        found = mouth_onset(times, openings, silent_until=onset, after=onset, margin=margin)
        res[f"{who}_frames"] = len(rec.video)
        res[f"{who}_tracked"] = found.tracked
        res[f"{who}_max_opening"] = None if not np.isfinite(openings).any() else round(float(np.nanmax(openings)), 4)
        res[f"{who}_baseline_opening"] = round(found.baseline, 4) if np.isfinite(found.baseline) else None
        res[f"{who}_latency_ms"] = None if found.index is None else round(1000.0 * (times[found.index] - onset), 1)
        res[f"{who}_mouth_response"] = found.direction
        if who == "watcher":
            res["watcher_mouth_open_at"] = None if found.index is None else float(times[found.index])
            audio = [(t, r) for t, r in rec.audio if t >= onset]
            lag = None if not audio else av_lag_ms(times, openings, np.array([t for t, _ in audio]),
                                                    np.array([r for _, r in audio]), onset, audio[-1][0])
            res["av_sync_ms"] = None if lag is None else lag[0]
            res["av_sync_r"] = None if lag is None else round(lag[1], 3)
    audio_onset = returned_audio_onset(trial["watcher"].audio, trial["start"], onset)
    res["watcher_audio_latency_ms"] = None if audio_onset is None else round(1000.0 * (audio_onset - onset), 1)
    res["av_offset_ms"] = None if audio_onset is None or res.get("watcher_mouth_open_at") is None else \
        round(1000.0 * (res["watcher_mouth_open_at"] - audio_onset), 1)
    res.pop("watcher_mouth_open_at", None)
    return res


async def run_webrtc(avatar: str | None, backend: Any, device: str, audio: Any, trials: int,
                     margin: float = 0.015, delay_s: float = 0.0, progress: Any = None) -> dict[str, Any]:
    """Start the server in-process on loopback, run `trials` speaker+watcher trials, stop it."""
    from ideal.avatar.audio.io import resample
    from ideal.server.app import start_server
    from ideal.server.config import ServerConfig

    config = ServerConfig(host="127.0.0.1", port=0, avatars=[avatar or "default"],
                          backend=backend if isinstance(backend, str) else "auto",
                          device="cpu" if device == "auto" else device, max_sessions=1, max_viewers=2)
    factory = None
    if not isinstance(backend, str) or delay_s:
        factory = _engine_factory(backend, delay_s)
    t = time.perf_counter()
    server = await start_server(config, factory)
    startup_s = time.perf_counter() - t
    audio_48k = resample(audio.audio, SAMPLE_RATE, RATE).astype(np.float32)
    onset_48k = int(round(audio.onset_sample * RATE / SAMPLE_RATE))
    results = []
    try:
        for k in range(trials):
            trial = await run_trial(server.url, audio_48k, onset_48k, f"bench{k}",
                                    audio.duration_s - audio.onset_s)
            results.append(analyse_trial(trial, margin))
            if progress:
                progress(1)
            await asyncio.sleep(0.5)  # the server closes the previous peers
        backend_name = server.state.catalog.default.info.get("backend")
    finally:
        await server.stop()
    return {"startup_s": round(startup_s, 2), "trials": results, "backend": backend_name}


def _engine_factory(backend: Any, delay_s: float) -> Any:
    """Streamer engines whose backend sleeps `delay_s` per call, with the render budget grown to match (the
    streamer keeps a fixed playout delay, so the injected time becomes latency rather than late frames)."""
    def factory(avatar_path: Any, config: Any) -> Any:
        from ideal.export.backends import create_backend
        from ideal.bench.offline import DelayedBackend
        from ideal.streamer.config import StreamerConfig
        from ideal.streamer.engine import StreamerEngine

        inner = backend if not isinstance(backend, str) else create_backend(avatar_path, config.backend,
                                                                             config.device)
        cfg = StreamerConfig()
        cfg.render_budget_ms += delay_s * 1e3
        return StreamerEngine(avatar_path, backend=DelayedBackend(inner, delay_s) if delay_s else inner,
                              device=config.device, config=cfg)
    return factory


# --- the `ideal bench --mode webrtc` entry ------------------------------------------------------------------
COLUMNS = [("trial", "trial"), ("connect_s", "connect s"), ("first_frame_after_connect_s", "1st frame s"),
           ("speaker_latency_ms", "e2e self ms"), ("watcher_latency_ms", "e2e watcher ms"),
           ("watcher_audio_latency_ms", "audio ms"), ("av_offset_ms", "A/V ms"), ("av_sync_ms", "sync ms"),
           ("av_sync_r", "sync r"), ("speaker_max_opening", "max open")]


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    trials = out["trials"]
    pick = lambda key: [t[key] for t in trials if t.get(key) is not None]  # noqa: E731
    return {"e2e_latency_ms": distribution(pick("speaker_latency_ms")),
            "e2e_latency_watcher_ms": distribution(pick("watcher_latency_ms")),
            "av_offset_ms": distribution(pick("av_offset_ms")),
            "av_sync_ms": distribution(pick("av_sync_ms")),
            "first_frame_after_connect_s": distribution(pick("first_frame_after_connect_s")),
            "mouth_onset_found": sum(t.get("speaker_latency_ms") is not None for t in trials)}


def run_webrtc_mode(args: Any) -> dict[str, Any]:
    from ideal.avatar.progress import progress_bar

    from ideal.bench.report import table
    from ideal.bench.signals import bench_audio

    audio = bench_audio(args.audio, silence_s=2.0, max_speech_s=args.duration or 3.0)
    backend = "auto" if args.backend == "all" else args.backend
    with progress_bar(total=args.trials, desc="bench webrtc", unit="trial") as bar:
        out = asyncio.run(run_webrtc(args.avatar, backend, args.device, audio, args.trials,
                                     delay_s=args.inject_delay_ms / 1e3, progress=bar.update))
    summary = summarise(out)
    rows = [{"trial": i, **t} for i, t in enumerate(out["trials"])]
    text = table(rows, COLUMNS)
    text += (f"\nserver start-up {out['startup_s']:.1f} s (backend {out['backend']}); end-to-end = speech onset sent "
             f"-> first decoded frame with the mouth open; A/V = mouth-open frame - returned audio onset (watcher); "
             f"sync = lag (+ = picture late) best aligning the watcher's mouth opening with its received loudness")
    return {"mode": "webrtc", **out, "summary": summary,
            "latency_definition": "speech onset sent -> first decoded video frame with the mouth open",
            "latency_samples_ms": {"self view": [t["speaker_latency_ms"] for t in out["trials"]
                                                 if t.get("speaker_latency_ms") is not None],
                                   "watcher": [t["watcher_latency_ms"] for t in out["trials"]
                                               if t.get("watcher_latency_ms") is not None]},
            "audio": {"source": audio.source, "seconds": round(audio.duration_s, 2), "onset_s": audio.onset_s},
            "_table": text}
