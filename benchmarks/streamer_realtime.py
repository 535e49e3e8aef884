"""Live streaming benchmark: 60 s of speech fed in 20 ms chunks at wall-clock speed through one session.

Reports, per tier (each run pins the session to that tier) and for the adaptive scheduler: sustained fps,
late frames, stalls, audio-arrival-to-frame latency p50/p95/p99, stage timings, RSS over time; then each tier's
quality against the finest tier (PSNR) and output resolution. Writes JSON with --json.

    python benchmarks/streamer_realtime.py --avatar /work/avatars/obama_quick --backend onnxruntime
    python benchmarks/streamer_realtime.py --avatar A --seconds 600 --tiers adaptive   # memory over 10 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", default=None, help="avatar dir (default: the built-in one)")
    p.add_argument("--backend", default="auto", help="auto | torch | onnxruntime | tensorrt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--audio", default=str(REPO.parent / "shared/data/speech/eng_60s.wav"))
    p.add_argument("--seconds", type=float, default=60.0, help="how much of the audio to stream (looped if longer)")
    p.add_argument("--chunk-ms", type=float, default=20.0)
    p.add_argument("--tiers", nargs="*", default=None,
                   help="tiers to pin, and/or 'adaptive' (default: every tier, then adaptive)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (torch and ONNX Runtime)")
    p.add_argument("--quality-frames", type=int, default=25, help="frames for the tier PSNR comparison (0: skip)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from ideal.avatar.audio.io import load_audio
    from ideal.bench.realtime import run_realtime
    from ideal.bench.tier_quality import tier_quality
    from ideal.streamer.config import StreamerConfig
    from ideal.streamer.engine import StreamerEngine

    audio = load_audio(args.audio)
    n = int(args.seconds * 16000)
    audio = np.resize(audio, n) if n > len(audio) else audio[:n]
    report: dict = {"command": " ".join(sys.argv), "audio": args.audio, "seconds": args.seconds,
                    "chunk_ms": args.chunk_ms, "runs": []}
    probe = StreamerEngine(args.avatar, backend=args.backend, device=args.device,
                           config=StreamerConfig(backend_threads=args.threads))
    report["engine"] = probe.info
    runs = args.tiers if args.tiers else [*probe.ordered_tiers, "adaptive"]
    if args.quality_frames:
        report["tier_quality"] = tier_quality(probe, audio[: 16000 * 30], n_frames=args.quality_frames)
        print(json.dumps({"tier_quality": report["tier_quality"]}, indent=1), flush=True)
    asyncio.run(probe.aclose())
    del probe

    for run in runs:
        pinned = run != "adaptive"
        config = StreamerConfig(adaptive_tiers=not pinned, backend_threads=args.threads)

        async def go(config=config, run=run, pinned=pinned):  # bound now: asyncio.run awaits it in this pass
            engine = StreamerEngine(args.avatar, backend=args.backend, device=args.device, config=config)
            try:
                fig, _ = await run_realtime(engine, audio, args.chunk_ms, tier=run if pinned else None)
                return engine.info, fig
            finally:
                await engine.aclose()

        info, fig = asyncio.run(go())
        d = fig.to_dict()
        d["run"] = run
        d["delay_ms"] = info["delay_ms"]
        report["runs"].append(d)
        print(json.dumps({k: d[k] for k in ("run", "backend", "frames", "sustained_fps", "late_frames", "stalls",
                                            "tiers_used", "latency_ms", "output_size", "render_calls",
                                            "tier_cost_ms", "load_average", "delay_ms")}), flush=True)
        print("  stage ms:", json.dumps({k: round(v["mean"], 2) for k, v in d["stage_ms"].items()
                                         if v["mean"] is not None}), flush=True)
        print("  rss MiB (first, last, max):", d["rss_mb"][0][1], d["rss_mb"][-1][1],
              max(r[1] for r in d["rss_mb"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
