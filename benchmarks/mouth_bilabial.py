"""Do predicted mouths close on bilabials (/p/, /b/, /m/)? Phone timings from PocketSphinx.

PocketSphinx (allphone mode, its bundled en-US acoustic model and phone language model) segments each
clip's audio into phones; for every bilabial segment we take the lowest mouth opening within it, for the
tracked mouth and for the leave-one-speaker-out prediction (preds.npz written by mouth_loso.py), both
z-scored per clip, and compare with open vowels. The phone recogniser is English-only, so the French and
German clips are reported but its segments there are approximate.

    python benchmarks/mouth_bilabial.py --preds benchmarks/mouth_results/preds.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from ideal.avatar.mouth.data import load_clip, shared_speaker_clips

REPO = Path(__file__).resolve().parents[1]
BILABIAL = {"P", "B", "M"}
OPEN_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "EY"}
log = logging.getLogger("mouth_bilabial")


def phone_segments(audio_16k: np.ndarray) -> list[tuple[str, float, float]]:
    """(phone, start s, end s) of the audio by PocketSphinx allphone decoding (offline, whole utterance)."""
    from pocketsphinx import Decoder, get_model_path

    pcm = (np.clip(audio_16k, -1, 1) * 32767).astype(np.int16).tobytes()
    d = Decoder(allphone=os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin"), lw=2.0, pip=0.3,
                beam=1e-10, pbeam=1e-10, loglevel="FATAL")
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    return [(s.word, s.start_frame / 100.0, (s.end_frame + 1) / 100.0) for s in d.seg()]


def segment_stat(signal: np.ndarray, segs, fps: float, shift_s: float, fn) -> list[float]:
    out = []
    for _, s, e in segs:
        a, b = int(np.floor((s - shift_s) * fps)), int(np.ceil((e - shift_s) * fps))
        a, b = max(a, 0), min(b, len(signal))
        if b > a:
            out.append(float(fn(signal[a:b])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--preds", type=Path, default=REPO / "benchmarks" / "mouth_results" / "preds.npz")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mouth_results" / "bilabial.json")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--offsets", type=Path, default=None,
                    help="the clips' A/V offsets: a mouth.json or offsets json (default: offsets.json beside --preds)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    preds = np.load(args.preds)
    from ideal.avatar.mouth.pipeline import read_offsets

    offsets = read_offsets(args.offsets or args.preds.parent / "offsets.json")
    z = lambda x: (x - x.mean()) / (x.std() + 1e-9)  # noqa: E731
    res, pooled = {}, {}
    for v, a, _ in shared_speaker_clips(args.data):
        c = load_clip(v, a, cache_dir=args.cache)
        if c.name not in preds:
            continue
        segs = phone_segments(c.audio)
        shift = offsets.get(c.name, 0.0) / 1000.0  # audio late by d: a phone at audio time t is video t - d
        tracked, pred = z(c.mouth_open), z(preds[c.name])
        bil = [s for s in segs if s[0] in BILABIAL]
        vow = [s for s in segs if s[0] in OPEN_VOWELS]
        row = {"n_bilabial": len(bil), "n_open_vowel": len(vow)}
        for name, sig in (("tracked", tracked), ("predicted", pred)):
            b_min = segment_stat(sig, bil, c.fps, shift, np.min)
            v_max = segment_stat(sig, vow, c.fps, shift, np.max)
            row[f"{name}_bilabial_min_z"] = float(np.mean(b_min)) if b_min else None
            row[f"{name}_vowel_max_z"] = float(np.mean(v_max)) if v_max else None
            row[f"{name}_bilabial_closed_frac"] = float(np.mean(np.array(b_min) < -0.5)) if b_min else None
        res[c.name] = row
        pooled.setdefault("tracked", []).extend(segment_stat(tracked, bil, c.fps, shift, np.min))
        pooled.setdefault("predicted", []).extend(segment_stat(pred, bil, c.fps, shift, np.min))
        log.info("%s: %s", c.name, row)
    t, p = np.array(pooled.get("tracked", [])), np.array(pooled.get("predicted", []))
    res["_pooled"] = {"n_bilabial": int(len(t)), "tracked_bilabial_min_z": float(t.mean()),
                      "predicted_bilabial_min_z": float(p.mean()),
                      "tracked_bilabial_closed_frac": float(np.mean(t < -0.5)),
                      "predicted_bilabial_closed_frac": float(np.mean(p < -0.5)),
                      "both_closed_frac": float(np.mean((t < -0.5) & (p < -0.5)))}
    args.out.write_text(json.dumps(res, indent=2))
    f = lambda x: "     n/a" if x is None else f"{x:8.2f}"  # noqa: E731
    print(f"{'clip':22s} {'n':>3s} {'trk bil':>8s} {'pred bil':>8s} {'trk vow':>8s} {'pred vow':>8s} "
          f"{'closed t/p':>11s}")
    for k, r in res.items():
        if k.startswith("_"):
            continue
        print(f"{k:22s} {r['n_bilabial']:3d} {f(r['tracked_bilabial_min_z'])} {f(r['predicted_bilabial_min_z'])} "
              f"{f(r['tracked_vowel_max_z'])} {f(r['predicted_vowel_max_z'])} "
              f"{r['tracked_bilabial_closed_frac']:5.2f}/{r['predicted_bilabial_closed_frac']:4.2f}")
    print("pooled:", res["_pooled"])


if __name__ == "__main__":
    main()
