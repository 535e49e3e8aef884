"""`ideal bench --mode render-tier`: the render tier alone, in-process against a Triton Inference Server.

    ideal bench --mode render-tier --sessions 8 --tier fast --render-url grpc://127.0.0.1:8001 \\
        --metrics-url http://127.0.0.1:8002/metrics

For 1, 2, 4 ... `--sessions` synthetic sessions, each asks for one frame per frame period (25 fps) with the
avatar's real inputs (its own poses and expressions, speech windows), at most one request outstanding: a tick
whose previous frame is still out counts as missed (the frame a live session would repeat). Reported per run:
frames/s delivered over all sessions, latency request -> crop on the host (p50/p95), missed ticks.

- in-process: the streamer's own `RenderQueue` over the in-process backend (`--backend`, default ONNX Runtime):
  one model thread, requests of all sessions merged into one batched call, as in one `ideal serve`.
- triton: every session has its own client (its own gRPC connection, as sessions on separate `ideal serve`
  nodes would), so batching across sessions happens in Triton's dynamic batcher. The batches Triton formed come
  from its statistics extension (per batch size: executions) and its metrics endpoint (requests / executions).
- the gRPC hop alone (`hop_probe`): one frame at a time, in-process then through Triton, on the same inputs: the
  added latency per percentile, and the round trip minus Triton's own time for those requests (transport).
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)


def session_counts(most: int) -> list[int]:
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    if counts[-1] != most:
        counts.append(most)
    return counts


def default_metrics_url(render_url: str) -> str:
    return f"http://{urlparse(render_url).hostname}:8002/metrics"


def triton_metrics(metrics_url: str, model: str | None = None) -> dict[str, dict[str, float]]:
    """Per model: Triton's counters from its Prometheus endpoint (nv_inference_request_success,
    nv_inference_exec_count, nv_inference_count, nv_inference_request_duration_us, nv_inference_queue_duration_us,
    nv_inference_compute_infer_duration_us)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for name, labels, value in re.findall(r"^(nv_inference_\w+)\{([^}]*)\} ([0-9.e+-]+)$", text, re.M):
        found = re.search(r'model="([^"]+)"', labels)
        if found is None or (model is not None and found.group(1) != model):
            continue
        out.setdefault(found.group(1), {})[name] = float(value)
    return out


def triton_statistics(client: Any, model: str) -> dict[str, Any]:
    """Cumulative counts and durations of one model from Triton's statistics extension, batch sizes included."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inf = stats["inference_stats"]

    def ns(key: str) -> float:
        return float(inf.get(key, {}).get("ns", 0))

    return {"requests": int(inf.get("success", {}).get("count", 0)), "success_ns": ns("success"),
            "queue_ns": ns("queue"), "compute_ns": ns("compute_input") + ns("compute_infer") + ns("compute_output"),
            "executions": int(stats.get("execution_count", 0)),
            "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}}


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    requests = after["requests"] - before["requests"]
    batches = {k: v - before["batches"].get(k, 0) for k, v in after["batches"].items()}
    batches = {k: v for k, v in sorted(batches.items()) if v > 0}
    executions = after["executions"] - before["executions"]
    frames = sum(k * v for k, v in batches.items())
    # a request may carry several frames (the batch a node's render queue formed); Triton's batch sizes count frames
    return {"requests": requests, "executions": executions, "batch_histogram": batches, "frames": frames,
            "mean_batch": round(requests / executions, 2) if executions else None,
            "frames_per_execution": round(frames / executions, 2) if executions else None,
            "server_ms_per_request": round((after["success_ns"] - before["success_ns"]) / 1e6 / requests, 2)
            if requests else None,
            "queue_ms_per_request": round((after["queue_ns"] - before["queue_ns"]) / 1e6 / requests, 2)
            if requests else None}


class _Inputs:
    """Real per-frame inputs: the avatar's own poses and expressions, windows of the bench speech."""

    def __init__(self, avatar: str | None, audio_16k: np.ndarray) -> None:
        from ideal.bench.scene import load_scene

        self.scene = load_scene(avatar, audio_16k)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.scene.inputs(i)


async def _paced_sessions(n: int, duration_s: float, fps: float, warmup_s: float,
                          call: Any) -> dict[str, Any]:
    """n sessions, one request per frame period each (at most one outstanding); `call(session, i)` is an
    awaitable render. Returns frames delivered in the window, latencies (ms), missed ticks."""
    loop = asyncio.get_running_loop()
    phases = np.random.default_rng(n).uniform(0.0, 1.0 / fps, n)
    t0 = loop.time() + 0.05
    end = t0 + warmup_s + duration_s
    latencies: list[float] = []
    delivered = 0
    missed = 0
    errors = 0

    async def one(s: int) -> None:
        nonlocal delivered, missed, errors
        pending: asyncio.Future | None = None
        started = 0.0
        i = 0
        offset = float(phases[s])  # sessions start at unrelated moments, as real calls do
        while True:
            tick = t0 + offset + i / fps
            if tick >= end:
                break
            await asyncio.sleep(max(0.0, tick - loop.time()))
            measuring = tick >= t0 + warmup_s
            if pending is not None and not pending.done():
                missed += measuring
                i += 1
                continue
            started = loop.time()
            pending = asyncio.ensure_future(call(s, i))
            pending.add_done_callback(lambda f, st=started, m=measuring: _done(f, st, m))
            i += 1
        if pending is not None:
            try:
                await pending
            except Exception:  # counted by _done
                pass

    def _done(fut: asyncio.Future, started: float, measuring: bool) -> None:
        nonlocal delivered, errors
        if fut.cancelled() or fut.exception() is not None:
            errors += measuring
            return
        if measuring:
            delivered += 1
            latencies.append(1000.0 * (loop.time() - started))

    await asyncio.gather(*(one(s) for s in range(n)))
    from ideal.bench.report import distribution

    return {"sessions": n, "offered_fps": round(n * fps, 1), "fps": round(delivered / duration_s, 2),
            "frames": delivered, "missed_ticks": int(missed), "errors": int(errors),
            "latency_ms": distribution(latencies)}


def run_inprocess(backend: Any, inputs: _Inputs, tier: str, n: int, duration_s: float, warmup_s: float) -> dict:
    from ideal.streamer.clock import MonotonicClock
    from ideal.streamer.render_queue import BASE, RenderQueue, RenderRequest
    from ideal.streamer.scheduler import CostModel

    async def go() -> dict[str, Any]:
        clock = MonotonicClock()
        queue = RenderQueue(backend, clock, CostModel(), max_batch=16)

        async def call(s: int, i: int) -> Any:
            audio, expression, pose = inputs.frame(i * 7 + s)
            req = RenderRequest(kind=BASE, tier=tier, deadline=clock.now() + 60.0, audio=audio,
                                expression=expression, pose=pose, compose=lambda rgb, alpha: rgb,
                                future=asyncio.get_running_loop().create_future(), owner=str(s))
            return await queue.submit(req)

        try:
            result = await _paced_sessions(n, duration_s, inputs.scene.fps, warmup_s, call)
        finally:
            await queue.aclose()
        result["render_calls"] = queue.calls
        result["mean_batch"] = round(queue.batched_frames / queue.calls, 2) if queue.calls else None
        return result

    return asyncio.run(go())


def run_triton(clients: list[Any], inputs: _Inputs, tier: str, n: int, duration_s: float, warmup_s: float) -> dict:
    executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bench-triton-{s}") for s in range(n)]

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        async def call(s: int, i: int) -> Any:
            audio, expression, pose = inputs.frame(i * 7 + s)
            return await loop.run_in_executor(executors[s], clients[s].render, audio[None], expression[None],
                                              pose[None], tier)

        return await _paced_sessions(n, duration_s, inputs.scene.fps, warmup_s, call)

    try:
        return asyncio.run(go())
    finally:
        for ex in executors:
            ex.shutdown(wait=True)


def hop_probe(local: Any, remote: Any, stats_client: Any, model: str, inputs: _Inputs, tier: str,
              n: int = 100) -> dict[str, Any]:
    """The gRPC hop alone: one frame at a time, no other traffic, `n` calls in-process then `n` through Triton on the
    same inputs. Added latency per percentile = Triton's round trip minus the in-process render; transport = the
    round trip minus Triton's own time for the request (its `success` duration over exactly these calls)."""
    import time

    from ideal.bench.report import distribution

    def timed(backend: Any) -> list[float]:
        out = []
        for i in range(n):
            audio, expression, pose = inputs.frame(i)
            t = time.perf_counter()
            backend.render(audio[None], expression[None], pose[None], tier)
            out.append(1000.0 * (time.perf_counter() - t))
        return out

    timed(local)  # warm
    local_ms = timed(local)
    before = triton_statistics(stats_client, model)
    remote_ms = timed(remote)
    delta = _stats_delta(before, triton_statistics(stats_client, model))
    loc, rem = distribution(local_ms), distribution(remote_ms)
    return {"frames": n, "in_process_ms": loc, "triton_round_trip_ms": rem,
            "added_ms": {q: round(rem[q] - loc[q], 2) for q in ("p50", "p95")},
            "server_ms_per_request": delta["server_ms_per_request"],
            "transport_ms_mean": round(rem["mean"] - delta["server_ms_per_request"], 2)
            if delta["server_ms_per_request"] is not None else None}


COLUMNS = [("where", "render"), ("sessions", "sessions"), ("offered_fps", "offered fps"), ("fps", "fps"),
           ("missed_ticks", "missed"), ("p50", "lat p50"), ("p95", "lat p95"), ("mean_batch", "mean batch"),
           ("batches", "batches (size: n)"), ("added", "+ms p50/p95"), ("server_ms", "Triton ms/req")]


def _row(where: str, r: dict[str, Any]) -> dict[str, Any]:
    tri = r.get("triton") or {}
    added = r.get("added_vs_in_process_ms") or {}
    return {"where": where, "sessions": r["sessions"], "offered_fps": r["offered_fps"], "fps": r["fps"],
            "missed_ticks": r["missed_ticks"], "p50": r["latency_ms"]["p50"], "p95": r["latency_ms"]["p95"],
            "mean_batch": tri.get("mean_batch", r.get("mean_batch")),
            "batches": " ".join(f"{k}:{v}" for k, v in (tri.get("batch_histogram") or {}).items()) or "-",
            "added": f"{added['p50']}/{added['p95']}" if "p95" in added else "-",
            "server_ms": tri.get("server_ms_per_request")}


def run_render_tier_mode(args: Any) -> dict[str, Any]:
    import os

    from ideal.avatar.errors import InputError
    from ideal.bench.report import table
    from ideal.bench.signals import bench_audio
    from ideal.export.backends import choose_backend

    tier = args.tier[0] if args.tier else "fast"
    duration = args.duration or 8.0
    warmup = 1.0
    counts = session_counts(args.sessions)
    inputs = _Inputs(args.avatar, bench_audio(args.audio, silence_s=0.5).audio)
    int8 = getattr(args, "int8", True)
    runs: dict[str, list[dict[str, Any]]] = {"in-process": [], "triton": []}
    local_name = "onnxruntime" if args.backend in ("auto", "all") else args.backend
    local = choose_backend(args.avatar, local_name, args.device, [tier], threads=args.threads, int8=int8)
    if tier not in local.backend.tiers:
        raise InputError(f"--tier {tier}: not a tier of this avatar", f"one of {', '.join(local.backend.tiers)}")
    for n in counts:
        runs["in-process"].append(run_inprocess(local.backend, inputs, tier, n, duration, warmup))
        log.info("in-process, %d sessions: %s", n, runs["in-process"][-1]["fps"])
    hop: dict[str, Any] | None = None
    if args.render_url:
        from ideal.avatar.manifest import resolve_avatar
        from ideal.export.triton_backend import TritonBackend
        from ideal.export.triton_models import render_model

        metrics_url = args.metrics_url or default_metrics_url(args.render_url)
        clients = [TritonBackend(resolve_avatar(args.avatar), args.render_url, [tier]) for _ in range(max(counts))]
        model = render_model(clients[0].namespace, tier)
        try:
            hop = hop_probe(local.backend, clients[0], clients[0]._client, model, inputs, tier)
            for n in counts:
                before = triton_statistics(clients[0]._client, model)
                before_metrics = triton_metrics(metrics_url, model).get(model, {})
                r = run_triton(clients[:n], inputs, tier, n, duration, warmup)
                after = triton_statistics(clients[0]._client, model)
                after_metrics = triton_metrics(metrics_url, model).get(model, {})
                r["triton"] = _stats_delta(before, after)
                r["metrics"] = {k: after_metrics.get(k, 0.0) - before_metrics.get(k, 0.0)
                                for k in ("nv_inference_request_success", "nv_inference_exec_count",
                                          "nv_inference_count")}
                local_run = next(x for x in runs["in-process"] if x["sessions"] == n)
                r["added_vs_in_process_ms"] = {
                    q: round(r["latency_ms"][q] - local_run["latency_ms"][q], 2)
                    for q in ("p50", "p95")
                    if r["latency_ms"][q] is not None and local_run["latency_ms"][q] is not None}
                runs["triton"].append(r)
                log.info("triton, %d sessions: %s", n, r["fps"])
        finally:
            for c in clients:
                c.close()
    del local
    rows = [_row(where, r) for where, rs in runs.items() for r in rs]
    text = table(rows, COLUMNS)
    if hop is not None:
        text += (f"\ngRPC hop, one frame at a time ({hop['frames']} frames): in-process "
                 f"{hop['in_process_ms']['p50']}/{hop['in_process_ms']['p95']} ms p50/p95, through Triton "
                 f"{hop['triton_round_trip_ms']['p50']}/{hop['triton_round_trip_ms']['p95']} ms: added "
                 f"{hop['added_ms']['p50']}/{hop['added_ms']['p95']} ms; of the round trip, Triton's own time "
                 f"{hop['server_ms_per_request']} ms, transport {hop['transport_ms_mean']} ms (means)")
    text += (f"\ntier {tier}; each session asks for a frame every {1000 / inputs.scene.fps:.0f} ms (one outstanding); "
             f"latency = request -> crop on the host (ms); +ms: Triton's latency percentiles minus in-process ones; "
             f"Triton ms/req: its own time per request (queue + compute); load average "
             f"{os.getloadavg()[0]:.2f}")
    return {"mode": "render-tier", "tier": tier, "runs": runs, "hop": hop, "in_process_backend": local_name,
            "render_url": args.render_url, "load_average": round(os.getloadavg()[0], 2), "_table": text}
