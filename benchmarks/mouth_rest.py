"""Where should the mouth go in silence: the neutral (zero) mouth or the face's own rest mouth?

For each prepared dataset, the mouth model's gated track (avatar.mouth.gate.gated_mouth_track, as `ideal dub` and the
streamer compute it) is compared with the tracked mouth opening, with the calibration fitted on the training
split (avatar.mouth.calibration) once without and once with its `rest`. Use a mouth model that never saw the
speaker (leave-one-speaker-out) or the figures flatter whichever variant trusts the model more:

    IDEAL_MOUTH_CACHE=/work/cache/mouth ideal mouth train --data OTHER_SPEAKERS... \\
        --offsets avatar/assets/mouth_model/mouth.json -o /work/cache/mouth/no_macron
    python benchmarks/mouth_rest.py --mouth-model /work/cache/mouth/no_macron --dataset /work/datasets/macron
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ideal.avatar.audio.io import load_audio
from ideal.avatar.evaluation.face_metrics import pearson
from ideal.avatar.dataset_manifest import load_dataset_manifest
from ideal.avatar.mouth.calibration import MOUTH, calibration_from_clip
from ideal.avatar.mouth.gate import gated_mouth_track
from ideal.avatar.mouth.inference import predict_frames
from ideal.avatar.mouth.model import load_mouth_model


def compare(dataset: Path, mouth_model) -> dict:
    manifest = load_dataset_manifest(dataset)
    fps = manifest.fps
    audio = load_audio(dataset / "audio.wav")
    tracked = np.load(dataset / "expression.npy")[:, MOUTH]
    n = len(tracked)
    train, held_out = np.arange(*manifest.split.train), np.arange(*manifest.split.val)
    raw = predict_frames(mouth_model, audio, n, fps)
    with_rest = calibration_from_clip(mouth_model, audio, tracked, fps, train)
    variants = {"neutral (zero)": with_rest.without_rest(), "rest": with_rest}
    out = {"dataset": str(dataset), "frames": n, "held_out": len(held_out),
           "rest_mouth_open": round(float(with_rest.rest[0]), 3), "silent_frames": with_rest.silent_frames}
    for name, cal in variants.items():
        mouth, gate = gated_mouth_track(raw, audio, fps, mouth_model.window.lookahead_ms, calibration=cal)
        silent = gate <= 0.0
        out[name] = {"r_clip": round(pearson(mouth[:, 0], tracked[:, 0]), 3),
                     "r_held_out": round(pearson(mouth[held_out, 0], tracked[held_out, 0]), 3),
                     "silent_mean_open": round(float(mouth[silent, 0].mean()), 3)}
    out["tracked_silent_mean_open"] = round(float(tracked[gate <= 0.0, 0].mean()), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mouth-model", type=Path, default=None, help="mouth model dir (default: the shipped one)")
    ap.add_argument("--dataset", type=Path, nargs="+", required=True, help="prepared dataset dirs")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    model = load_mouth_model(args.mouth_model)
    results = [compare(d, model) for d in args.dataset]
    for r in results:
        print(f"{r['dataset']}: rest opening {r['rest_mouth_open']} ({r['silent_frames']} silent training frames); "
              f"tracked in silence {r['tracked_silent_mean_open']}")
        for name in ("neutral (zero)", "rest"):
            v = r[name]
            print(f"  {name:15s} r clip {v['r_clip']:.3f}  r held-out {v['r_held_out']:.3f}  "
                  f"mean opening in silence {v['silent_mean_open']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"mouth_model": str(model.path), "results": results}, indent=2))


if __name__ == "__main__":
    main()
