"""A/V offset of every shared clip, by each method of avatar.mouth.offset.estimate_offset.

    python benchmarks/mouth_offsets.py [--model DIR] [--out benchmarks/mouth_results/offsets_shipped.json]

`mouth_model` uses the shipped model (trained on these clips with their bootstrapped offsets, so on them it
is not an independent check; the bootstrap's own leave-speaker-out figures are in offsets.json);
`energy_envelope` needs no model. Positive = audio late against video. `--all` adds the clips of
../shared/data/speakers (default: the seven clips of train/ and drivers/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ideal.avatar.mouth.data import load_clip, shared_clips, shared_speaker_clips
from ideal.avatar.mouth.offset import estimate_offset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--all", action="store_true", help="also the clips of ../shared/data/speakers")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mouth_results" / "offsets_shipped.json")
    args = ap.parse_args()
    from ideal.avatar.mouth.model import load_mouth_model

    model = load_mouth_model(args.model)
    res = {}
    print(f"{'clip':22s} {'model ms':>9s} {'r':>5s} {'energy ms':>9s} {'r':>5s}")
    pairs = [(v, a) for v, a, _ in shared_speaker_clips(args.data)] if args.all else shared_clips(args.data)
    for v, a in pairs:
        c = load_clip(v, a, cache_dir=args.cache)
        m = estimate_offset(c.audio, c.mouth_open, c.fps, model=model, valid=c.valid)
        e = estimate_offset(c.audio, c.mouth_open, c.fps, model=None, valid=c.valid)
        res[c.name] = {"mouth_model": m.to_dict(), "energy_envelope": e.to_dict()}
        print(f"{c.name:22s} {m.offset_ms:+9.0f} {m.confidence:5.2f} {e.offset_ms:+9.0f} {e.confidence:5.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
