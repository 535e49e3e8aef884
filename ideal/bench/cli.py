"""Benchmark latency and throughput of an avatar on this machine.

  ideal bench --mode offline  --backend all                 frames as fast as possible, per backend and tier
  ideal bench --mode realtime --sessions 2 --duration 20    live audio at wall-clock speed, N sessions
  ideal bench --mode webrtc                                 a real WebRTC client against `ideal serve` on loopback

A table goes to the terminal; --json writes every figure with the machine, versions and settings; --plot
draws per-stage bars (offline) or latency histograms (realtime, webrtc).
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

MODES = ("offline", "realtime", "webrtc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--avatar", default="default", help="avatar dir (default: the built-in avatar)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt", "all"),
                        help="backend to measure; all = every backend that runs here (offline mode)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--tier", nargs="+", metavar="TIER", help="tiers to measure (offline; default all) or "
                        "the highest tier the streamer may use (realtime/webrtc)")
    parser.add_argument("--pin-tier", action="store_true",
                        help="realtime: render every frame at --tier (no adaptation), to measure that tier")
    parser.add_argument("--audio", help="speech file to feed (default: espeak-ng speech, else synthetic)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions (batch in offline mode)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of stream per run (default: offline 4, realtime 10, webrtc: the audio)")
    parser.add_argument("--mode", choices=MODES, default="offline")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--fp16", action="store_true", help="FP16 engines (TensorRT)")
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="ONNX Runtime on CPU: run the FP32 refine graphs, not the INT8 ones (A/B)")
    parser.add_argument("--trials", type=int, default=3, help="webrtc: speech onsets measured (one peer each)")
    parser.add_argument("--interleave", action="store_true",
                        help="offline: backends and tiers take turns frame by frame (fair on a loaded machine)")
    parser.add_argument("--max-sessions", action="store_true",
                        help="realtime: also find how many sessions hold 25 fps (adds runs)")
    parser.add_argument("--inject-delay-ms", type=float, default=0.0,
                        help="add a fixed sleep to every backend call (checks that latency figures see it)")
    parser.add_argument("--json", metavar="OUT", help="write the full figures as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write a plot")


def run(args: argparse.Namespace) -> int:
    import time

    from ideal.avatar.errors import InputError
    from ideal.bench import report

    if args.sessions < 1:
        raise InputError(f"--sessions {args.sessions}", "use 1 or more")
    if args.duration is not None and args.duration <= 0:
        raise InputError(f"--duration {args.duration}", "use a positive number of seconds")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.time()
    if args.mode == "offline":
        from ideal.bench.offline import run_offline_mode

        result = run_offline_mode(args)
    elif args.mode == "realtime":
        from ideal.bench.realtime import run_realtime_mode

        result = run_realtime_mode(args)
    else:
        from ideal.bench.webrtc import run_webrtc_mode

        result = run_webrtc_mode(args)
    result["machine"] = report.machine_info()
    result["settings"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    result["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    result["wall_seconds"] = round(time.time() - started, 1)
    print(result.pop("_table"))
    if args.json:
        report.write_json(result, args.json)
        print(f"figures: {args.json}")
    if args.plot:
        report.plot(result, args.plot)
        print(f"plot: {args.plot}")
    return 0
