"""`ideal bench --mode realtime`: live audio into the streamer at wall-clock speed, N sessions at once.

Each session gets the bench audio (looped to `--duration`) in 20 ms chunks of 16 kHz mono, pushed when a
microphone would have delivered them. A consumer per session takes frames from `Session.frames()` as they
are emitted. Latency is measured here, not read from the streamer's stats: for every received frame, from
the wall-clock moment the chunk holding the frame's first audio sample was pushed to the moment the frame
reached the consumer. (Where a frame's audio sits in the pushed signal is found by matching the frames' own
audio, which the session returns sample-exact, against the pushed signal: any silence the session padded at
the start is accounted for.) The streamer's own latency figure is reported next to it as a cross-check.

Figures per run: sustained fps per session, late frames (the last frame repeated), dropped frames, tier
changes, latency p50/p95/p99, the real-time factor (compute per frame over the frame duration), and with
`--max-sessions` the most sessions that hold 25 fps here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from avatar.clock import SAMPLE_RATE
from ideal.bench.report import percentiles

log = logging.getLogger(__name__)

CHUNK_MS = 20
CHUNK = SAMPLE_RATE * CHUNK_MS // 1000
COMPUTE_KEYS = ("features", "expression", "model", "compose")


@dataclass
class SessionRun:
    pushed_at: list[float] = field(default_factory=list)  # wall time chunk k was pushed
    frames: list[dict[str, Any]] = field(default_factory=list)  # per received frame
    audio: list[np.ndarray] = field(default_factory=list)  # the frames' own audio (640 samples each)
    stats: dict[str, Any] = field(default_factory=dict)


def _loop_audio(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    reps = int(np.ceil(n / max(len(audio), 1)))
    return np.tile(audio, reps)[:n].astype(np.float32)


async def _feed(session: Any, signal: np.ndarray, run: SessionRun, start: float) -> None:
    for k in range(len(signal) // CHUNK):
        due = start + (k + 1) * CHUNK_MS / 1000.0  # the chunk's last sample has just been "captured"
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        run.pushed_at.append(time.monotonic())
        session.push_audio(signal[k * CHUNK:(k + 1) * CHUNK], SAMPLE_RATE, 1)


async def _consume(session: Any, run: SessionRun, until: float) -> None:
    async for frame in session.frames():
        now = time.monotonic()
        run.frames.append({"index": frame.index, "received": now, "late": frame.late, "tier": frame.tier,
                           "speech": frame.speech, "streamer_latency_ms": frame.latency_ms,
                           "timings_ms": dict(frame.timings_ms)})
        run.audio.append(np.asarray(frame.audio, np.float32))
        if now >= until:
            return


def timeline_offset(received_audio: np.ndarray, signal: np.ndarray, max_offset: int = 4 * SAMPLE_RATE) -> int | None:
    """Samples of padding before the pushed signal on the session timeline: received[p] == signal[p - offset].
    Found by cross-correlation (the session returns each frame's samples exactly); None when unmatched."""
    n = min(len(received_audio), len(signal) + max_offset, 12 * SAMPLE_RATE)
    if n < SAMPLE_RATE // 2 or np.abs(signal).max() == 0:
        return None
    a = received_audio[:n].astype(np.float64)
    b = signal[:n].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)[:max_offset]
    offset = int(np.argmax(corr))
    seg = min(n - offset, SAMPLE_RATE)
    if seg <= 0 or not np.allclose(a[offset:offset + seg], b[:seg], atol=1e-3):
        return None
    return offset


def measure_latency(run: SessionRun, signal: np.ndarray, samples_per_frame: int) -> tuple[list[float], int | None]:
    """Per received on-time frame: ms from the push of the chunk holding its first sample to its receipt."""
    received = np.concatenate(run.audio) if run.audio else np.zeros(0, np.float32)
    first_index = run.frames[0]["index"] if run.frames else 0
    offset = timeline_offset(received, signal)
    if offset is None:
        return [], None
    offset += first_index * samples_per_frame  # received audio starts at the first received frame
    out = []
    for f in run.frames:
        if f["late"]:
            continue
        sample = f["index"] * samples_per_frame - offset
        if sample < 0:
            continue  # padding before the first pushed chunk: no audio arrival to measure from
        chunk = sample // CHUNK
        if chunk < len(run.pushed_at):
            out.append(1000.0 * (f["received"] - run.pushed_at[chunk]))
    return out, offset


async def run_sessions(engine: Any, audio: np.ndarray, sessions: int, duration_s: float, tier: str | None = None,
                       progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run `sessions` concurrent live sessions on `engine` for `duration_s` of audio each; returns figures."""
    signal = _loop_audio(audio, duration_s + 1.0)
    runs = [SessionRun() for _ in range(sessions)]
    opened = [engine.open_session(expression="audio", tier=tier) for _ in range(sessions)]
    start = time.monotonic()
    until = start + duration_s
    tasks = [asyncio.create_task(_feed(s, signal, r, start)) for s, r in zip(opened, runs)]
    consumers = [asyncio.create_task(_consume(s, r, until)) for s, r in zip(opened, runs)]
    ticker = None
    if progress:
        async def tick() -> None:
            while True:
                await asyncio.sleep(1.0)
                progress(1.0)
        ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait_for(asyncio.gather(*consumers), timeout=duration_s + 30.0)
    finally:
        for t in tasks + ([ticker] if ticker else []):
            t.cancel()
        await asyncio.gather(*tasks, *([ticker] if ticker else []), return_exceptions=True)
        for s, r in zip(opened, runs):
            r.stats = s.stats.to_dict()
            await s.aclose()
    return summarise(runs, signal, engine, duration_s)


def summarise(runs: list[SessionRun], signal: np.ndarray, engine: Any, duration_s: float) -> dict[str, Any]:
    spf = int(round(SAMPLE_RATE / engine.fps))
    per_session = []
    all_latency: list[float] = []
    for r in runs:
        latency, offset = measure_latency(r, signal, spf)
        all_latency += latency
        frames = r.frames
        span = (frames[-1]["received"] - frames[0]["received"]) if len(frames) > 1 else 0.0
        tiers = [f["tier"] for f in frames]
        compute = [sum(f["timings_ms"].get(k, 0.0) for k in COMPUTE_KEYS) for f in frames if not f["late"]]
        per_session.append({
            "frames": len(frames),
            "sustained_fps": round((len(frames) - 1) / span, 2) if span > 0 else None,
            "late_frames": int(sum(f["late"] for f in frames)),
            "dropped_frames": int(r.stats.get("dropped_frames", 0)),
            "tier_changes": int(sum(a != b for a, b in zip(tiers, tiers[1:]))),
            "tiers_used": {t: tiers.count(t) for t in sorted(set(tiers))},
            "latency_ms": percentiles(latency),
            "streamer_latency_ms": percentiles([f["streamer_latency_ms"] for f in frames
                                                if f["streamer_latency_ms"] is not None and not f["late"]]),
            "real_time_factor": round(float(np.mean(compute)) * engine.fps / 1000.0, 3) if compute else None,
            "timeline_padding_ms": None if offset is None else round(1000.0 * (offset - frames[0]["index"] * spf)
                                                                     / SAMPLE_RATE, 1),
            "audio_filled_ms": r.stats.get("audio", {}).get("filled_ms"),
            "stage_ms": r.stats.get("stage_ms", {}),
        })
    fps = [s["sustained_fps"] for s in per_session if s["sustained_fps"]]
    frames_total = sum(s["frames"] for s in per_session)
    late_total = sum(s["late_frames"] for s in per_session)
    return {
        "sessions": len(runs), "duration_s": duration_s, "backend": engine.info.get("backend"),
        "min_fps": round(min(fps), 2) if fps else None, "late_share": round(late_total / max(frames_total, 1), 4),
        "latency_ms": percentiles(all_latency), "per_session": per_session, "latency_samples_ms": all_latency,
        "playout_delay_ms": round(engine.info.get("delay_ms", 0.0), 1),
    }


def holds_real_time(summary: dict[str, Any], fps: float = 25.0) -> bool:
    """25 fps held: every session emitted at >= 97% of the frame rate with under 5% late frames."""
    return bool(summary["min_fps"] and summary["min_fps"] >= 0.97 * fps and summary["late_share"] < 0.05)


# --- the `ideal bench --mode realtime` entry ---------------------------------------------------------------
COLUMNS = [("sessions", "sessions"), ("backend", "backend"), ("min_fps", "fps (min)"), ("late", "late"),
           ("dropped", "dropped"), ("tier_changes", "tier chg"), ("p50", "lat p50"), ("p95", "lat p95"),
           ("p99", "lat p99"), ("rtf", "RTF")]


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    ps = summary["per_session"]
    lat = summary["latency_ms"]
    rtf = [s["real_time_factor"] for s in ps if s["real_time_factor"] is not None]
    return {"sessions": summary["sessions"], "backend": summary["backend"], "min_fps": summary["min_fps"],
            "late": sum(s["late_frames"] for s in ps), "dropped": sum(s["dropped_frames"] for s in ps),
            "tier_changes": sum(s["tier_changes"] for s in ps), "p50": lat["p50"], "p95": lat["p95"],
            "p99": lat["p99"], "rtf": max(rtf) if rtf else None}


def make_engine(avatar: str | None, backend: Any, device: str, config: Any | None = None) -> tuple[Any, float]:
    """A StreamerEngine and how long it took to start (load, pick backend, warm every tier)."""
    from streamer.engine import StreamerEngine

    t = time.perf_counter()
    engine = StreamerEngine(None if avatar in (None, "default") else avatar, backend=backend,
                            device="cpu" if device == "auto" else device, config=config)
    return engine, time.perf_counter() - t


def run_realtime_mode(args: Any) -> dict[str, Any]:
    from tqdm import tqdm

    from ideal.bench.offline import DelayedBackend
    from ideal.bench.report import table
    from ideal.bench.signals import bench_audio

    audio = bench_audio(args.audio, silence_s=1.0)
    duration = args.duration or 10.0
    backend: Any = "auto" if args.backend == "all" else args.backend
    config = None
    if args.inject_delay_ms:
        from export.backends import create_backend
        from streamer.config import StreamerConfig

        backend = DelayedBackend(create_backend(args.avatar, backend, args.device, threads=args.threads),
                                 args.inject_delay_ms / 1e3)
        # the streamer keeps a fixed playout delay: grow its render budget by the injected time, so the slower
        # backend shows up as latency (what is being checked) rather than as late frames
        config = StreamerConfig()
        config.render_budget_ms += args.inject_delay_ms
    engine, startup_s = make_engine(args.avatar, backend, args.device, config)
    tier = args.tier[0] if args.tier else None
    counts = [args.sessions]
    summaries = []

    async def go() -> None:
        try:
            with tqdm(total=duration * len(counts), desc="bench realtime", unit="s") as bar:
                for n in counts:
                    summaries.append(await run_sessions(engine, audio.audio, n, duration, tier, bar.update))
                    if args.max_sessions and holds_real_time(summaries[-1]) and n < 16:
                        counts.append(n + 1)
                        bar.total += duration
                        bar.refresh()
        finally:
            await engine.aclose()

    asyncio.run(go())
    held = [s["sessions"] for s in summaries if holds_real_time(s, engine.fps)]
    text = table([_row(s) for s in summaries], COLUMNS)
    text += f"\nstart-up {startup_s:.1f} s; playout delay {summaries[0]['playout_delay_ms']} ms; latency = " \
            "audio chunk pushed -> frame received (ms)"
    if args.max_sessions:
        text += f"\nsessions holding {engine.fps:.0f} fps: {max(held) if held else 0}"
    return {"mode": "realtime", "startup_s": round(startup_s, 2), "engine": engine.info, "runs": summaries,
            "max_sessions_at_fps": (max(held) if held else 0) if args.max_sessions else None,
            "latency_definition": "audio chunk pushed -> frame received by the consumer",
            "latency_samples_ms": {f"{s['sessions']} session(s)": s["latency_samples_ms"] for s in summaries},
            "audio": {"source": audio.source, "seconds": round(audio.duration_s, 2)}, "_table": text}
