"""`ideal bench --mode realtime`: live audio into the streamer at wall-clock speed, N sessions at once.

Each session gets the bench audio (looped to `--duration`) in 20 ms chunks of 16 kHz mono, pushed when a
microphone would have delivered them. A consumer per session takes frames from `Session.frames()` as they
are emitted. Latency is measured here, not read from the streamer's stats: for every received frame, from
the wall-clock moment the chunk holding the frame's first audio sample was pushed to the moment the frame
reached the consumer. (Where a frame's audio sits in the pushed signal is found by matching the frame's own
audio, which the session returns sample-exact, against the pushed signal, so silence the session padded in
at the start or after a gap is accounted for.) The streamer's own latency figure is reported next to it as a
cross-check.

Figures per run: sustained fps per session, late frames (the last frame repeated), dropped frames, tier
changes, latency p50/p95/p99, the real-time factor (compute per frame over the frame duration), and with
`--max-sessions` the most sessions that hold 25 fps here.

The one live-session harness: `feed` and `consume` drive a session as a call would, `run_sessions` runs N of
them for `ideal bench`, and `run_realtime` one session through the whole signal for benchmarks/streamer_*.py
(the streamer's own latency figures, stage timings, stalls and RSS along the run, as `TierFigures`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ideal.avatar.clock import DEFAULT_FPS, SAMPLE_RATE
from ideal.bench.report import distribution
from ideal.streamer.stats import percentiles, rss_mb

log = logging.getLogger(__name__)

CHUNK_MS = 20
CHUNK = SAMPLE_RATE * CHUNK_MS // 1000
COMPUTE_KEYS = ("features", "expression", "model", "compose")


@dataclass
class SessionRun:
    pushed_at: list[float] = field(default_factory=list)  # wall time chunk k was pushed
    frames: list[dict[str, Any]] = field(default_factory=list)  # per received frame
    audio: list[np.ndarray] = field(default_factory=list)  # the frames' own audio (640 samples each), if kept
    stats: dict[str, Any] = field(default_factory=dict)


def _loop_audio(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    reps = int(np.ceil(n / max(len(audio), 1)))
    return np.tile(audio, reps)[:n].astype(np.float32)


async def feed(session: Any, clock: Any, signal: np.ndarray, chunk_ms: float = CHUNK_MS, start: float | None = None,
               pushed_at: list[float] | None = None) -> None:
    """Push `signal` (16 kHz mono) in `chunk_ms` chunks, each when a live microphone would have delivered it
    (once its last sample was captured); the clock time of every push goes to `pushed_at`."""
    n = int(round(chunk_ms * SAMPLE_RATE / 1000.0))
    t0 = clock.now() if start is None else start
    for k in range(-(-len(signal) // n)):
        await clock.sleep_until(t0 + (k + 1) * n / SAMPLE_RATE)
        if session.closed:
            return
        if pushed_at is not None:
            pushed_at.append(clock.now())
        session.push_audio(signal[k * n:(k + 1) * n], SAMPLE_RATE, 1)


async def consume(session: Any, run: SessionRun, clock: Any, until: float | None = None, keep_audio: bool = True,
                  on_frame: Callable[[float], None] | None = None) -> None:
    """Take the session's frames as they are emitted, into `run.frames` (and their audio into `run.audio`),
    until the clock passes `until` or the session ends; `on_frame(now)` after each."""
    async for frame in session.frames():
        now = clock.now()
        run.frames.append({"index": frame.index, "received": now, "late": frame.late, "tier": frame.tier,
                           "speech": frame.speech, "streamer_latency_ms": frame.latency_ms,
                           "timings_ms": dict(frame.timings_ms)})
        if keep_audio:
            run.audio.append(np.asarray(frame.audio, np.float32))
        if on_frame is not None:
            on_frame(now)
        if until is not None and now >= until:
            return


def _match(frame_audio: np.ndarray, signal: np.ndarray, start: int) -> bool:
    n = len(frame_audio)
    return 0 <= start and start + n <= len(signal) and np.allclose(frame_audio, signal[start:start + n], atol=1e-3)


def _search(frame_audio: np.ndarray, signal: np.ndarray, centre: int, radius: int) -> int | None:
    """Where in `signal` (within `radius` of `centre`) the frame's samples sit exactly, by cross-correlation."""
    lo, hi = max(0, centre - radius), min(len(signal), centre + radius + len(frame_audio))
    seg = signal[lo:hi].astype(np.float64)
    if len(seg) < len(frame_audio):
        return None
    corr = np.correlate(seg, frame_audio.astype(np.float64), mode="valid")
    for k in np.argsort(corr)[::-1][:3]:
        if _match(frame_audio, signal, lo + int(k)):
            return lo + int(k)
    return None


def locate_frames(run: SessionRun, signal: np.ndarray, samples_per_frame: int) -> list[int | None]:
    """Per received frame, the index in the pushed signal of the frame's first sample (None where the frame
    holds no pushed audio: padded silence, or silence that cannot be told apart). The session returns each
    frame's samples exactly, so a frame is placed by matching its samples, which stays right across any gap
    the session filled with silence in mid-stream."""
    out: list[int | None] = []
    offset: int | None = None  # signal index = frame index * spf - offset
    for f, audio in zip(run.frames, run.audio):
        if not np.any(np.abs(audio) > 1e-4):
            out.append(None)
            continue
        expected = f["index"] * samples_per_frame - (offset or 0)
        if offset is not None and _match(audio, signal, expected):
            out.append(expected)
            continue
        found = _search(audio, signal, expected, 4 * SAMPLE_RATE)
        if found is not None:
            offset = f["index"] * samples_per_frame - found
        out.append(found)
    return out


def measure_latency(run: SessionRun, signal: np.ndarray, samples_per_frame: int) -> tuple[list[float], int]:
    """Per received on-time frame holding pushed audio: ms from the push of the chunk holding its first sample
    to its receipt; and how many frames could be placed in the pushed signal."""
    positions = locate_frames(run, signal, samples_per_frame)
    out = []
    for f, pos in zip(run.frames, positions):
        if f["late"] or pos is None:
            continue
        chunk = pos // CHUNK
        if chunk < len(run.pushed_at):
            out.append(1000.0 * (f["received"] - run.pushed_at[chunk]))
    return out, sum(p is not None for p in positions)


async def run_sessions(engine: Any, audio: np.ndarray, sessions: int, duration_s: float, tier: str | None = None,
                       progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run `sessions` concurrent live sessions on `engine` for `duration_s` of audio each; returns figures.
    Every time is read from the engine's clock: wall time normally, virtual time under a `VirtualClock`."""
    clock = engine.clock
    signal = _loop_audio(audio, duration_s + 1.0)
    runs = [SessionRun() for _ in range(sessions)]
    opened = [engine.open_session(expression="audio", tier=tier) for _ in range(sessions)]
    start = clock.now()
    until = start + duration_s
    tasks = [asyncio.create_task(feed(s, clock, signal, CHUNK_MS, start, r.pushed_at)) for s, r in zip(opened, runs)]
    consumers = [asyncio.create_task(consume(s, r, clock, until)) for s, r in zip(opened, runs)]
    ticker = None
    if progress:
        async def tick() -> None:
            while True:
                await clock.sleep(1.0)
                progress(1.0)
        ticker = asyncio.create_task(tick())
    try:
        await asyncio.gather(*consumers)
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
        latency, placed = measure_latency(r, signal, spf)
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
            "latency_ms": distribution(latency),
            "streamer_latency_ms": distribution([f["streamer_latency_ms"] for f in frames
                                                if f["streamer_latency_ms"] is not None and not f["late"]]),
            "real_time_factor": round(float(np.mean(compute)) * engine.fps / 1000.0, 3) if compute else None,
            "frames_placed": placed,  # frames whose audio was found in the pushed signal (latency measurable)
            "audio_filled_ms": r.stats.get("audio", {}).get("filled_ms"),
            "stage_ms": r.stats.get("stage_ms", {}),
        })
    fps = [s["sustained_fps"] for s in per_session if s["sustained_fps"]]
    frames_total = sum(s["frames"] for s in per_session)
    late_total = sum(s["late_frames"] for s in per_session)
    return {
        "sessions": len(runs), "duration_s": duration_s, "backend": engine.info.get("backend"),
        "refiner": engine.info.get("refiner"),
        "min_fps": round(min(fps), 2) if fps else None, "late_share": round(late_total / max(frames_total, 1), 4),
        "latency_ms": distribution(all_latency), "per_session": per_session, "latency_samples_ms": all_latency,
        "playout_delay_ms": round(engine.info.get("delay_ms", 0.0), 1),
    }


@dataclass
class TierFigures:
    """One session's run through a whole signal (`run_realtime`), as the streamer itself saw it."""

    tier: str
    backend: str
    seconds: float
    frames: int
    sustained_fps: float
    late_frames: int
    tiers_used: dict[str, int]
    latency_ms: dict[str, float | None]
    stage_ms: dict[str, dict[str, float | None]]
    output_size: tuple[int, int]
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, MiB)
    stalls: int = 0  # gaps between emitted frames longer than two frame durations
    render_calls: int = 0  # backend calls completed (on time or not)
    tier_cost_ms: dict[str, float] = field(default_factory=dict)  # the scheduler's cost estimate per tier at the end
    load_average: float | None = None  # 1-min load average of the machine at the end (a busy host explains a lot)

    def to_dict(self) -> dict:
        return asdict(self)


async def run_realtime(engine: Any, audio_16k: np.ndarray, chunk_ms: float = float(CHUNK_MS), tier: str | None = None,
                       expression: str = "audio", rss_every_s: float = 5.0, tail_s: float = 0.5,
                       on_progress: Callable[[float], None] | None = None) -> tuple[TierFigures, SessionRun]:
    """One session fed all of `audio_16k` live, then `tail_s` plus the playout delay for the last frames;
    returns its figures and the per-frame record (frames' audio not kept: RSS is part of the figures)."""
    clock = engine.clock
    session = engine.open_session(expression=expression, tier=tier)
    run = SessionRun()
    rss: list[tuple[float, float]] = []
    start = clock.now()
    next_rss = 0.0

    def sample_rss(now: float) -> None:
        nonlocal next_rss
        if now - start >= next_rss:
            rss.append((round(now - start, 2), round(rss_mb(), 1)))
            next_rss += rss_every_s
            if on_progress:
                on_progress(now - start)

    consumer = asyncio.ensure_future(consume(session, run, clock, keep_audio=False, on_frame=sample_rss))
    await feed(session, clock, audio_16k, chunk_ms, start, run.pushed_at)
    await clock.sleep(tail_s + engine.info["delay_ms"] / 1000.0)
    stats = session.stats
    await session.aclose()
    await consumer
    run.stats = stats.to_dict()
    rss.append((round(clock.now() - start, 2), round(rss_mb(), 1)))
    return tier_figures(run, engine, tier, len(audio_16k) / SAMPLE_RATE, rss), run


def tier_figures(run: SessionRun, engine: Any, tier: str | None, duration: float,
                 rss: list[tuple[float, float]]) -> TierFigures:
    frames = run.frames
    fresh = [f for f in frames if not f["late"]]
    span = (frames[-1]["received"] - frames[0]["received"]) if len(frames) > 1 else 0.0
    gaps = np.diff([f["received"] for f in frames]) if len(frames) > 1 else np.zeros(0)
    tiers: dict[str, int] = {}
    for f in fresh:
        tiers[f["tier"]] = tiers.get(f["tier"], 0) + 1
    stage_names = sorted({k for f in fresh for k in f["timings_ms"]})
    stage_ms = {}
    for k in stage_names:
        values = [f["timings_ms"][k] for f in fresh if k in f["timings_ms"]]
        stage_ms[k] = {"mean": float(np.mean(values)), **percentiles(values, (95,))}
    h, w = engine.idle_image.shape[:2]
    return TierFigures(
        tier=tier or "adaptive", backend=engine.backend_name, seconds=round(duration, 2), frames=len(frames),
        sustained_fps=round(len(fresh) / span, 2) if span > 0 else 0.0, late_frames=len(frames) - len(fresh),
        tiers_used=tiers, latency_ms=percentiles(f["streamer_latency_ms"] for f in fresh), stage_ms=stage_ms,
        output_size=(w, h), rss_mb=rss, stalls=int(np.count_nonzero(gaps > 2.0 / engine.fps)),
        render_calls=engine.render_queue.calls,
        tier_cost_ms={t: round(1000.0 * (engine.costs.estimate(t) or 0.0), 1) for t in engine.ordered_tiers},
        load_average=_load_average(),
    )


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not on every platform
        return None


def holds_real_time(summary: dict[str, Any], fps: float = DEFAULT_FPS) -> bool:
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


def make_engine(avatar: str | None, backend: Any, device: str, config: Any | None = None,
                clock: Any | None = None) -> tuple[Any, float]:
    """A StreamerEngine and how long it took to start (load, pick backend, warm every tier)."""
    from ideal.streamer.engine import StreamerEngine

    t = time.perf_counter()
    engine = StreamerEngine(None if avatar in (None, "default") else avatar, backend=backend,
                            device="cpu" if device == "auto" else device, config=config, clock=clock)
    return engine, time.perf_counter() - t


def run_realtime_mode(args: Any) -> dict[str, Any]:
    from ideal.avatar.progress import progress_bar

    from ideal.avatar.errors import InputError
    from ideal.bench.offline import DelayedBackend
    from ideal.bench.report import table
    from ideal.bench.signals import bench_audio

    audio = bench_audio(args.audio, silence_s=1.0)
    duration = args.duration or 10.0
    backend: Any = "auto" if args.backend == "all" else args.backend
    from ideal.streamer.config import StreamerConfig

    int8 = getattr(args, "int8", True)
    config = StreamerConfig(backend_threads=args.threads, int8=int8)
    if getattr(args, "render_budget_ms", None):
        config.render_budget_ms = float(args.render_budget_ms)
    render_url = getattr(args, "render_url", None)
    if render_url:
        from ideal.export.backends import create_backend

        backend = create_backend(args.avatar, backend, args.device, render_url=render_url)
    if args.inject_delay_ms:
        from ideal.export.backends import create_backend

        backend = DelayedBackend(backend if render_url else
                                 create_backend(args.avatar, backend, args.device, threads=args.threads, int8=int8),
                                 args.inject_delay_ms / 1e3)
        # the streamer keeps a fixed playout delay: grow its render budget by the injected time, so the slower
        # backend shows up as latency (what is being checked) rather than as late frames
        config.render_budget_ms += args.inject_delay_ms
    if getattr(args, "pin_tier", False):
        if not args.tier:
            raise InputError("--pin-tier needs --tier", "e.g. --tier coarse --pin-tier")
        config.adaptive_tiers = False
    engine, startup_s = make_engine(args.avatar, backend, args.device, config)
    tier = args.tier[0] if args.tier else None
    counts = [args.sessions]
    summaries = []

    async def go() -> None:
        try:
            with progress_bar(total=duration * len(counts), desc="bench realtime", unit="s") as bar:
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
