"""End to end: a rendered avatar dubbed with a held-out speaker's audio, its lips against the real speaker's.

`ideal dub` (audio only, neutral upper face) renders the avatar speaking the first --seconds of a clip's
audio with a mouth model that never saw that speaker; the rendered video is tracked like any clip and three
Pearson r are reported on mouth opening: commanded (what the mouth model asked for, after dub's gating) vs the
real speaker, rendered vs the real speaker, rendered vs commanded (does the avatar obey its mouth input).

    python benchmarks/mouth_dub.py --mouth-model /work/cache/mouth/model_no_reagan \
        --video ../shared/data/drivers/reagan_clip1.mp4 --audio ../shared/data/drivers/reagan_clip1.wav
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--avatar", default=None, help="avatar dir (default: the built-in one)")
    ap.add_argument("--video", type=Path, required=True, help="the held-out speaker's clip (mouth labels)")
    ap.add_argument("--audio", type=Path, default=None, help="its speech if not in the video")
    ap.add_argument("--mouth-model", type=Path, required=True, help="a mouth model trained without this speaker")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--tier", default="coarse")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mouth_results" / "dub.json")
    args = ap.parse_args()
    from ideal.avatar.audio.io import write_wav
    from ideal.avatar.mouth.data import load_clip
    from ideal.avatar.evaluation.face_metrics import pearson
    from ideal.avatar.prepare import track_clip
    from ideal.cli import main as ideal

    real = load_clip(args.video, args.audio, cache_dir=args.cache)
    work = Path(tempfile.mkdtemp(prefix="mouth_dub_"))
    speech = work / "speech.wav"
    write_wav(speech, real.audio[: int(args.seconds * 16000)])
    video, drive = work / "dub.mp4", work / "drive.npz"
    cmd = ["dub", "--audio", str(speech), "--mouth-model", str(args.mouth_model), "--expression", "neutral",
           "--no-mark", "--tier", args.tier, "--save-drive", str(drive), "-o", str(video)]
    if args.avatar:
        cmd += ["--avatar", str(args.avatar)]
    if ideal(cmd) != 0:
        raise SystemExit("ideal dub failed")
    rendered = track_clip(video, audio_path=speech, progress=False).expression[:, 0]
    commanded = np.load(drive)["audio_mouth_open"]
    n = min(len(rendered), len(commanded), int(args.seconds * real.fps))
    y = real.mouth_open[:n]
    res = {"avatar": str(args.avatar or "default"), "clip": real.name, "frames": n, "tier": args.tier,
           "mouth_model": str(args.mouth_model),
           "r_commanded_vs_real": pearson(commanded[:n], y), "r_rendered_vs_real": pearson(rendered[:n], y),
           "r_rendered_vs_commanded": pearson(rendered[:n], commanded[:n])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
