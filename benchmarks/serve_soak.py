"""Soak of `ideal serve`: many sessions opened and dropped, and whether the server's process comes back to where it
was (whether native memory levels off after many sessions).

Runs the real server (a real StreamerEngine on an avatar, the built-in one by default) in this process and a
client in a second one (`ideal.server.client.join`, a browser-like microphone of silence) that opens
`--concurrency` sessions at a time, holds them `--hold-s` seconds and closes them, `--sessions` in all. Every
`--sample-every` sessions the server records its RSS, Python's allocated blocks (flat while RSS grows: the growth
is native), open file descriptors, threads, asyncio tasks and live peers; it writes the curve, and the RSS slope
over each half, as JSON:

    python benchmarks/serve_soak.py --sessions 500 --out benchmarks/results/serve_soak.json

Loopback only (127.0.0.1), bounded in count and time (`--timeout-s`). Not part of the test suite (see
tests/test_server_hardening.py for its 20-session version).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ideal.server.app import start_server
from ideal.server.config import ServerConfig
from ideal.streamer.stats import rss_mb

log = logging.getLogger("serve_soak")


def sample(state: Any, closed: int) -> dict[str, Any]:
    gc.collect()
    return {"sessions_closed": closed, "rss_mb": round(rss_mb(), 1), "py_blocks": sys.getallocatedblocks(),
            "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "tasks": len(asyncio.all_tasks()), "peers": len(state.peers.peers), "t_s": round(time.monotonic(), 1)}


def slope_mb_per_100(points: list[dict[str, Any]]) -> float | None:
    """Least-squares RSS slope in MB per 100 sessions."""
    if len(points) < 2:
        return None
    xs = [p["sessions_closed"] for p in points]
    ys = [p["rss_mb"] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var, 2) if var else None


async def client(url: str, sessions: int, concurrency: int, hold_s: float) -> None:
    """The client process: `sessions` sessions, `concurrency` at a time."""
    import numpy as np

    from ideal.server.client import join, wait_connected

    async def join_when_free() -> Any:
        # The server frees a slot when it hears the previous peer's DTLS close, a moment after the client closed.
        for _ in range(100):
            try:
                return await join(url, np.zeros(4800, np.float32), loop_audio=True)
            except RuntimeError as exc:
                if not str(exc).startswith("503"):
                    raise
                await asyncio.sleep(0.1)
        raise RuntimeError("the server kept its slots busy for 10 s")

    done = 0
    while done < sessions:
        n = min(concurrency, sessions - done)
        peers = await asyncio.gather(*(join_when_free() for _ in range(n)))
        await asyncio.gather(*(wait_connected(p, 30) for p in peers))
        await asyncio.sleep(hold_s)
        await asyncio.gather(*(p.close() for p in peers))
        done += n
        print(done, flush=True)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    config = ServerConfig(host="127.0.0.1", port=0, avatars=[args.avatar], backend=args.backend,
                          max_sessions=args.concurrency, offer_burst=args.sessions + 1)
    server = await start_server(config)
    state = server.state
    engine_closed = lambda: state.metrics.counters["avatar_closed"]  # noqa: E731
    curve = [sample(state, 0)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", server.url, "--sessions", str(args.sessions),
        "--concurrency", str(args.concurrency), "--hold-s", str(args.hold_s), stdout=asyncio.subprocess.PIPE)
    deadline = time.monotonic() + args.timeout_s
    try:
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
            if not line:
                break
            opened = int(line)
            if opened % args.sample_every == 0 or opened == args.sessions:
                try:  # the batch's peers are gone
                    await asyncio.wait_for(state.peers.wait_empty(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                curve.append(sample(state, engine_closed()))
                log.info("%s", curve[-1])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    await asyncio.sleep(2.0)
    curve.append(sample(state, engine_closed()))
    await server.stop()
    half = len(curve) // 2
    first, last = curve[1] if len(curve) > 1 else curve[0], curve[-1]
    return {"command": " ".join(sys.argv), "sessions": engine_closed(), "concurrency": args.concurrency,
            "hold_s": args.hold_s, "avatar": args.avatar, "backend": args.backend, "curve": curve,
            "rss_slope_mb_per_100_sessions": {"first_half": slope_mb_per_100(curve[1:half + 1]),
                                              "second_half": slope_mb_per_100(curve[half:])},
            "back_to_baseline": {k: last[k] - first[k] for k in ("fds", "threads", "tasks", "peers")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=1, help="sessions open at once (the server's max-sessions)")
    p.add_argument("--hold-s", type=float, default=1.0, help="how long each session stays connected")
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--avatar", default="default")
    p.add_argument("--backend", default="auto")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="stop after this long whatever the count")
    p.add_argument("--out", type=Path)
    p.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the client process
    args = p.parse_args(argv)
    if args.client:
        asyncio.run(client(args.client, args.sessions, args.concurrency, args.hold_s))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)  # a line per ICE check otherwise
    result = asyncio.run(soak(args))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
