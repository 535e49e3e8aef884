"""Two `ideal serve` nodes, one WebRTC session each: rendering in-process vs sharing one Triton server.

    python benchmarks/triton_two_nodes.py [--avatar DIR] [--duration 20] [--wav speech.wav] [--json OUT]

Runs, one after the other on this machine:

- in-process: two `ideal serve` processes on different ports, each rendering its own session with ONNX Runtime;
- triton: one `ideal triton` (PyTriton, the same ONNX Runtime graphs) and two `ideal serve --render-url`
  processes on different ports sharing it.

Each node gets one session from a Python WebRTC client (`ideal.server.client`: looped speech as a browser
microphone sends it, the avatar's video received and counted). Per node, from its `GET /metrics` over the
measured window (after 4 s of settling): frames emitted and the *fresh* ones (a frame not rendered in time
repeats the last picture), so fresh frames/s is the render tier's real output; and the video frames/s the
client received. For the Triton run, the batches Triton formed in that window: requests / executions per
render model from its metrics endpoint (nv_inference_request_success / nv_inference_exec_count) and the batch
size histogram from its statistics extension (sizes in frames: a node's render queue may already send several
frames of its session in one request when it is behind). The 1-min load average is recorded with the figures:
on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start(cmd: list[str], ready: str, log_path: Path, timeout: float = 300.0) -> subprocess.Popen:
    log = open(log_path, "ab")  # kept open for the child's lifetime
    seen = log_path.stat().st_size
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.encode() in log_path.read_bytes()[seen:]:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd)} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def serve_metrics(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return json.loads(r.read())


def run_nodes(label: str, serve_args: list[str], wav: str, duration: float, work: Path,
              triton: dict[str, Any] | None = None) -> dict[str, Any]:
    ports = free_ports(2)
    nodes = [start([sys.executable, "-m", "ideal", "serve", "--port", str(p), "--no-export", *serve_args],
                   "ideal serve: open", work / f"{label}-serve-{i}.log") for i, p in enumerate(ports)]
    clients: list[subprocess.Popen] = []
    try:
        settle = 4.0
        clients = [subprocess.Popen([sys.executable, "-m", "ideal.server.client", f"http://127.0.0.1:{p}/",
                                     "--wav", wav, "--duration", str(duration + settle)], cwd=str(REPO),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for p in ports]
        time.sleep(2.0 + settle)  # connect (the client waits 2 s itself), then settle
        before = [serve_metrics(p) for p in ports]
        tri_before = triton_snapshot(triton) if triton else None
        t0 = time.monotonic()
        time.sleep(duration)
        after = [serve_metrics(p) for p in ports]
        tri_after = triton_snapshot(triton) if triton else None
        elapsed = time.monotonic() - t0
        received = [json.loads(c.communicate(timeout=120)[0].strip().splitlines()[-1]) for c in clients]
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        for n in nodes:
            stop(n)
    per_node = []
    for b, a, r in zip(before, after, received):
        frames, late = a["frames"] - b["frames"], a["late_frames"] - b["late_frames"]
        per_node.append({"frames_per_s": round(frames / elapsed, 2), "fresh_per_s": round((frames - late) / elapsed, 2),
                         "late_share": round(late / frames, 3) if frames else None,
                         "client_received_fps": round(r["speaker_fps"][0], 2) if r["speaker_fps"] else None,
                         "latency_ms": a.get("latency_ms")})
    out = {"nodes": per_node, "fresh_per_s_total": round(sum(n["fresh_per_s"] for n in per_node), 2),
           "seconds": round(elapsed, 1), "load_average": round(os.getloadavg()[0], 2)}
    if triton:
        out["triton"] = triton_delta(tri_before, tri_after)
    return out


def triton_snapshot(triton: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    from ideal.bench.render_tier import triton_metrics, triton_statistics

    client = grpcclient.InferenceServerClient(triton["grpc"])
    try:
        stats = {m: triton_statistics(client, m) for m in triton["models"]}
    finally:
        client.close()
    return {"metrics": triton_metrics(triton["metrics_url"]), "stats": stats}


def triton_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    from ideal.bench.render_tier import _stats_delta

    out = {}
    for model, stats in after["stats"].items():
        d = _stats_delta(before["stats"][model], stats)
        if not d["requests"]:
            continue
        m_after, m_before = after["metrics"].get(model, {}), before["metrics"].get(model, {})
        req = m_after.get("nv_inference_request_success", 0) - m_before.get("nv_inference_request_success", 0)
        exe = m_after.get("nv_inference_exec_count", 0) - m_before.get("nv_inference_exec_count", 0)
        out[model] = {"metrics_requests": int(req), "metrics_executions": int(exe),
                      "metrics_mean_batch": round(req / exe, 2) if exe else None, **d}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", default="default")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--wav", default=None, help="speech the callers say (default: the repo's test clip's audio)")
    p.add_argument("--triton-threads", type=int, default=None, help="ONNX Runtime threads in `ideal triton`")
    p.add_argument("--json")
    p.add_argument("--work", default=None, help="where the logs go (default: a temp dir)")
    args = p.parse_args()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="triton-two-nodes-"))
    work.mkdir(parents=True, exist_ok=True)
    wav = args.wav or str(_default_wav(work))
    avatar = [] if args.avatar == "default" else ["--avatar", args.avatar]
    results: dict[str, Any] = {"uptime_before": _uptime()}
    results["in_process"] = run_nodes("local", [*avatar, "--backend", "onnxruntime"], wav, args.duration, work)
    grpc, http, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "ideal", "triton", "--grpc-port", str(grpc), "--http-port", str(http),
           "--metrics-port", str(metrics), *avatar]
    if args.triton_threads:
        cmd += ["--threads", str(args.triton_threads)]
    server = start(cmd, "ideal triton: serving", work / "triton.log")
    try:
        from ideal.avatar.manifest import resolve_avatar
        from ideal.export.triton_models import namespace_for

        ns = namespace_for(resolve_avatar(None if args.avatar == "default" else args.avatar))
        names = [line for line in (work / "triton.log").read_text().splitlines() if "ideal triton: serving" in line]
        models = [m.strip() for m in names[-1].split("serving ", 1)[1].split(" on ")[0].split(",")]
        triton = {"grpc": f"127.0.0.1:{grpc}", "metrics_url": f"http://127.0.0.1:{metrics}/metrics",
                  "models": [m for m in models if m.startswith(ns + ".render.")]}
        results["triton"] = run_nodes("triton", [*avatar, "--render-url", f"grpc://127.0.0.1:{grpc}"], wav,
                                      args.duration, work, triton)
    finally:
        stop(server)
    results["uptime_after"] = _uptime()
    print(json.dumps(results, indent=2))
    for label in ("in_process", "triton"):
        r = results[label]
        print(f"{label:<10} fresh frames/s per node {[n['fresh_per_s'] for n in r['nodes']]} "
              f"total {r['fresh_per_s_total']} (client received {[n['client_received_fps'] for n in r['nodes']]}) "
              f"load {r['load_average']}")
    for model, t in results["triton"]["triton"].items():
        print(f"triton {model}: {t['requests']} requests ({t['frames']} frames) in {t['executions']} executions: "
              f"{t['mean_batch']} requests per execution (metrics endpoint: {t['metrics_mean_batch']}), "
              f"{t['frames_per_execution']} frames per execution; executions per batch size (frames) "
              f"{t['batch_histogram']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _default_wav(work: Path) -> Path:
    """The speech of the repo's own test clip (tests/data), as a WAV file the client can loop."""
    import soundfile as sf

    from ideal.avatar.audio.io import load_audio

    clips = sorted((REPO / "tests" / "data").glob("*.mp4"))
    if not clips:
        raise SystemExit("no clip in tests/data: pass --wav")
    path = work / "speech.wav"
    sf.write(path, load_audio(clips[0]), 16000)
    return path


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
