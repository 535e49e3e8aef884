"""Voice to lips in real Chromium, one change at a time: the hop table of `ideal bench --mode browser` for the
settings before, each cut on its own, and the shipped defaults, run back to back on one quiet machine.

    python benchmarks/voice_to_lips.py --audio SPEECH.wav --duration 20 --out benchmarks/results/voice_to_lips.json

Prints one column per setting (p50 of each hop, then the total's p50/p95, the independent total, repeats, fresh
frames/s and the A/V sync at a viewer) and writes every run's figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

# The settings compared; each differs from the one before it in one thing ("10 ms packets" from "budget 65").
# "before" is the server as it was (aiortc's 80 ms microphone buffer, soxr HQ at the edge, an 85 ms render
# budget); "defaults" is what `ideal serve` does now. Run one setting per process (--only NAME, --out merges):
# runs in one process drifted (repeats rose from 24 % to 98 % over eight runs on a quiet machine).
_BEFORE = {"mic_buffer": "aiortc", "resample_quality": "HQ", "mic_packet_ms": 0, "jitter_ms": 22.0,
           "render_budget_ms": 85.0}
_IMMEDIATE = {**_BEFORE, "mic_buffer": "immediate"}
_FIR = {**_IMMEDIATE, "resample_quality": "FIR", "jitter_ms": 10.0}
_BUDGET_65 = {**_FIR, "render_budget_ms": 65.0}
SETTINGS: dict[str, dict[str, Any]] = {
    "before": _BEFORE,
    "mic immediate": _IMMEDIATE,
    "FIR resampler": _FIR,
    "budget 65": _BUDGET_65,
    "budget 45": {**_FIR, "render_budget_ms": 45.0},
    "10 ms packets": {**_BUDGET_65, "mic_packet_ms": 10},
    "defaults": {},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio", required=True, help="speech file the fake microphone plays (looped)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per setting")
    p.add_argument("--only", nargs="*", help="run only these settings (names as in the table)")
    p.add_argument("--out", type=Path, help="write the figures as JSON (with --only: merged into what is there)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ideal.avatar.audio.io import load_audio
    from ideal.bench.browser import BrowserBenchSettings, find_chromium, run_browser

    speech = load_audio(args.audio)
    chromium = find_chromium()
    results: dict[str, Any] = {}
    if args.out and args.out.exists() and args.only:  # one setting per process: runs in one process drift
        results = json.loads(args.out.read_text()).get("runs", {})
    for name, overrides in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        settings = BrowserBenchSettings(duration_s=args.duration, **overrides)
        print(f"-- {name}: {overrides or 'the defaults'}", file=sys.stderr, flush=True)
        results[name] = {"settings": overrides, **asyncio.run(run_browser(None, "auto", "cpu", speech, settings,
                                                                          chromium))}
    print(format_columns(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"audio": args.audio, "duration_s": args.duration, "runs": results},
                                       indent=1, default=str))
    return 0


def format_columns(results: dict[str, Any]) -> str:
    names = list(results)
    first = results[names[0]]["table"]
    rows = [[h["label"]] + [_num(r["table"]["hops"][k]["p50"]) for r in results.values()]
            for k, h in enumerate(first["hops"])]
    rows.append(["total p50"] + [_num(r["table"]["total_ms"]["p50"]) for r in results.values()])
    rows.append(["total p95"] + [_num(r["table"]["total_ms"]["p95"]) for r in results.values()])
    rows.append(["independent total"] + [_num(r.get("independent_total_ms")) for r in results.values()])
    rows.append(["repeats %"] + [_num(100 * (r["table"]["repeats"] or 0)) for r in results.values()])
    rows.append(["fresh frames/s"] + [_num(r["table"]["fresh_fps"]) for r in results.values()])
    rows.append(["A/V sync at a viewer"] + [_num(r.get("viewer_av_sync_ms")) for r in results.values()])
    widths = [max(len(str(row[i])) for row in rows + [["p50 ms", *names]]) for i in range(len(names) + 1)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(["p50 ms", *names], widths))]
    lines.append(" | ".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1f}"


if __name__ == "__main__":
    sys.exit(main())
