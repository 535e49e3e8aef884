"""Measuring a live session the way a call would run it, importable by `ideal bench` and benchmarks/.

- `run_realtime`: feed a signal in fixed chunks at the clock's pace (wall-clock speed on `MonotonicClock`),
  consume every frame, and summarise: sustained fps (frames emitted fresh per second), late frames, stalls,
  latency percentiles (audio arrival -> emission, from the session's own per-frame figures), stage timings, and
  the process RSS sampled along the run.
- `tier_quality`: render the same frames at every tier and compare each with the finest tier (PSNR over the
  full composited frame and over the head crop), with each tier's output resolution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.streamer.stats import TierFigures, percentiles, rss_mb

log = logging.getLogger(__name__)


@dataclass
class FrameLog:
    """One emitted frame as the consumer saw it."""

    index: int
    tier: str
    late: bool
    speech: bool
    latency_ms: float | None
    received_at: float
    timings_ms: dict[str, float] = field(default_factory=dict)


async def feed(session: Any, clock: Any, audio_16k: np.ndarray, chunk_ms: float = 20.0,
               start: float | None = None) -> None:
    """Push `audio_16k` in `chunk_ms` chunks, each when a live microphone would have delivered it."""
    n = int(round(chunk_ms * SAMPLE_RATE / 1000.0))
    t0 = clock.now() if start is None else start
    for k in range(0, len(audio_16k) // n + (len(audio_16k) % n > 0)):
        await clock.sleep_until(t0 + (k + 1) * n / SAMPLE_RATE)  # a chunk is sent once it has been captured
        if session.closed:
            return
        session.push_audio(audio_16k[k * n:(k + 1) * n], SAMPLE_RATE, 1)


async def run_realtime(engine: Any, audio_16k: np.ndarray, chunk_ms: float = 20.0, tier: str | None = None,
                       expression: str = "audio", rss_every_s: float = 5.0, tail_s: float = 0.5,
                       on_progress: Callable[[float], None] | None = None) -> tuple[TierFigures, list[FrameLog]]:
    """One session fed `audio_16k` live; returns its figures and the per-frame log."""
    clock = engine.clock
    session = engine.open_session(expression=expression, tier=tier)
    logs: list[FrameLog] = []
    rss: list[tuple[float, float]] = []
    start = clock.now()
    duration = len(audio_16k) / SAMPLE_RATE

    async def consume() -> None:
        next_rss = 0.0
        async for frame in session.frames():
            now = clock.now()
            logs.append(FrameLog(frame.index, frame.tier, frame.late, frame.speech, frame.latency_ms, now,
                                 frame.timings_ms))
            if now - start >= next_rss:
                rss.append((round(now - start, 2), round(rss_mb(), 1)))
                next_rss += rss_every_s
                if on_progress:
                    on_progress(now - start)

    consumer = asyncio.ensure_future(consume())
    await feed(session, clock, audio_16k, chunk_ms, start)
    await clock.sleep(tail_s + engine.info["delay_ms"] / 1000.0)
    stats = session.stats
    await session.aclose()
    await consumer
    rss.append((round(clock.now() - start, 2), round(rss_mb(), 1)))
    return summarise(logs, engine, tier, stats, duration, rss), logs


def summarise(logs: list[FrameLog], engine: Any, tier: str | None, stats: Any, duration: float,
              rss: list[tuple[float, float]]) -> TierFigures:
    fresh = [f for f in logs if not f.late]
    span = (logs[-1].received_at - logs[0].received_at) if len(logs) > 1 else 0.0
    frame_s = 1.0 / engine.fps
    gaps = np.diff([f.received_at for f in logs]) if len(logs) > 1 else np.zeros(0)
    tiers: dict[str, int] = {}
    for f in fresh:
        tiers[f.tier] = tiers.get(f.tier, 0) + 1
    stage_names = sorted({k for f in fresh for k in f.timings_ms})
    stage_ms = {k: {"mean": float(np.mean([f.timings_ms[k] for f in fresh if k in f.timings_ms])),
                    **percentiles([f.timings_ms[k] for f in fresh if k in f.timings_ms], (95,))}
                for k in stage_names}
    h, w = engine.idle_image.shape[:2]
    return TierFigures(
        tier=tier or "adaptive", backend=engine.backend_name, seconds=round(duration, 2), frames=len(logs),
        sustained_fps=round(len(fresh) / span, 2) if span > 0 else 0.0, late_frames=len(logs) - len(fresh),
        tiers_used=tiers, latency_ms=percentiles(f.latency_ms for f in fresh), stage_ms=stage_ms,
        output_size=(w, h), rss_mb=rss, stalls=int(np.count_nonzero(gaps > 2 * frame_s)),
        render_calls=engine.render_queue.calls,
        tier_cost_ms={t: round(1000.0 * (engine.costs.estimate(t) or 0.0), 1) for t in engine.ordered_tiers},
        load_average=_load_average(),
    )


def _load_average() -> float | None:
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def tier_quality(engine: Any, audio_16k: np.ndarray, n_frames: int = 25, stride: int = 10) -> dict[str, dict]:
    """Each tier against the finest one on the same inputs: PSNR (dB) of the full frame and of the head crop,
    the crop and output sizes, and the render time per frame (batch 1) on this machine."""
    import cv2

    from ideal.avatar.audio.features import compute_features, window_for_frame
    from ideal.avatar.expression import EXPRESSION_DIM, SLICES

    mel = compute_features(audio_16k, engine.mel_config)
    idx = [i * stride for i in range(n_frames)]
    audio = np.stack([window_for_frame(mel, i, engine.fps, engine.window, engine.mel_config) for i in idx])
    expr = np.zeros((len(idx), EXPRESSION_DIM), np.float32)
    # the mouth from the audio-to-mouth model, so the comparison includes moving lips
    from ideal.avatar.mouth.features import compute_mouth_features, padding_value
    from ideal.avatar.mouth.inference import frame_end_indices, gather_windows

    feats = compute_mouth_features(audio_16k, engine.mouth.spec)
    ends = frame_end_indices(max(idx) + 1, engine.fps, engine.mouth.window, engine.mouth.spec)[idx]
    expr[:, SLICES["mouth"].indices] = engine.mouth.predict(gather_windows(feats, ends, engine.mouth.window.length,
                                                       padding_value(engine.mouth.spec)))
    pose = engine.pose_track[np.asarray(idx) % len(engine.pose_track)]
    plates = [engine.plate_index(p) for p in pose]
    finest = engine.ordered_tiers[-1]
    crops: dict[str, np.ndarray] = {}
    frames: dict[str, list[np.ndarray]] = {}
    cost: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for t in engine.ordered_tiers:
        rgbs, fr, secs = [], [], []
        for k in range(len(idx)):
            t0 = time.perf_counter()
            r = engine.backend.render(audio[k:k + 1], expr[k:k + 1], pose[k:k + 1], t)
            secs.append(time.perf_counter() - t0)
            rgbs.append(np.clip(r.rgb[0] * r.alpha[0], 0, 1))
            fr.append(engine.compose(r.rgb[0], r.alpha[0], plates[k]))
        sizes[t] = rgbs[0].shape[0]
        crops[t], frames[t], cost[t] = np.stack(rgbs), fr, float(np.median(secs))
    ref_size = sizes[finest]
    out = {}
    for t in engine.ordered_tiers:
        c = crops[t]
        if sizes[t] != ref_size:
            c = np.stack([cv2.resize(x, (ref_size, ref_size), interpolation=cv2.INTER_LINEAR) for x in c])
        psnr_crop = float(np.mean([_psnr(a * 255.0, b * 255.0) for a, b in zip(c, crops[finest])]))
        psnr_full = float(np.mean([_psnr(a, b) for a, b in zip(frames[t], frames[finest])]))
        h, w = frames[t][0].shape[:2]
        tier = engine.tiers[t]
        ref = t == finest  # the reference itself: PSNR would be infinite
        out[t] = {"psnr_crop_db_vs_" + finest: None if ref else round(psnr_crop, 2),
                  "psnr_frame_db_vs_" + finest: None if ref else round(psnr_full, 2),
                  "rays": f"{tier.rays}x{tier.rays}x{tier.samples}", "crop_px": sizes[t], "output_size": [w, h],
                  "render_ms_batch1": round(1000.0 * cost[t], 1)}
    return out
