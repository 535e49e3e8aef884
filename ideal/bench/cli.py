"""Benchmark latency and throughput of an avatar on this machine.

  ideal bench --mode offline  --backend all                 frames as fast as possible, per backend and tier
  ideal bench --mode realtime --sessions 2 --duration 20    live audio at wall-clock speed, N sessions
  ideal bench --mode webrtc                                 a real WebRTC client against `ideal serve` on loopback
  ideal bench --mode render-tier --sessions 8 --render-url grpc://HOST:PORT   render tier alone: in-process vs Triton
  ideal bench --mode browser --duration 20                  voice to lips hop by hop, in real Chromium

A table goes to the terminal; --json writes every figure with the machine, versions and settings; --plot
draws per-stage bars (offline) or latency histograms (realtime, webrtc).
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ideal.bench.config import BenchConfig
    from ideal.configcli import add_options

    # the modes read the parsed arguments themselves; BenchConfig is where their defaults and help live
    parser.set_defaults(_bench_options=add_options(parser, BenchConfig,
                                                   metavars={"tier": "TIER", "json": "OUT", "plot": "OUT.png"}))


def run(args: argparse.Namespace) -> int:
    import time

    from ideal.avatar.errors import InputError
    from ideal.bench import report

    cfg = args._bench_options.build(args)
    if cfg.sessions < 1:
        raise InputError(f"--sessions {cfg.sessions}", "use 1 or more")
    if cfg.duration is not None and cfg.duration <= 0:
        raise InputError(f"--duration {cfg.duration}", "use a positive number of seconds")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    started = time.time()
    if cfg.mode == "offline":
        from ideal.bench.offline import run_offline_mode

        result = run_offline_mode(args)
    elif cfg.mode == "realtime":
        from ideal.bench.realtime import run_realtime_mode

        result = run_realtime_mode(args)
    elif cfg.mode == "browser":
        from ideal.bench.browser import run_browser_mode

        result = run_browser_mode(args)
    elif cfg.mode == "render-tier":
        from ideal.bench.render_tier import run_render_tier_mode

        result = run_render_tier_mode(args)
    else:
        from ideal.bench.webrtc import run_webrtc_mode

        result = run_webrtc_mode(args)
    result["machine"] = report.machine_info()
    result["settings"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    result["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    result["wall_seconds"] = round(time.time() - started, 1)
    print(result.pop("_table"))
    if cfg.json:
        report.write_json(result, cfg.json)
        print(f"figures: {cfg.json}")
    if cfg.plot:
        report.plot(result, cfg.plot)
        print(f"plot: {cfg.plot}")
    return 0
