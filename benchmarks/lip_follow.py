"""Do an avatar's lips follow its mouth input? Dub real speech (mouth from the audio, neutral upper face), track
the rendered video with the prepare tracker, and compare the rendered mouth opening with the commanded one.

    python benchmarks/lip_follow.py --avatar AVATAR [--mouth-model DIR] [--audio SPEECH.wav] [--seconds 10]
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
    ap.add_argument("--audio", type=Path, default=REPO.parent / "shared/data/speech/test_13s.wav")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tier", default="coarse")
    ap.add_argument("--keep", type=Path, default=None, help="copy the dubbed video here")
    ap.add_argument("--mouth-model", type=Path, default=None, help="mouth model dir (default: the shipped one)")
    args = ap.parse_args()
    from ideal.avatar.audio.io import load_audio, write_wav
    from ideal.avatar.evaluation.dub_check import check_dub
    from ideal.cli import main as ideal

    work = Path(tempfile.mkdtemp(prefix="lip_follow_"))
    write_wav(work / "speech.wav", load_audio(args.audio)[: int(args.seconds * 16000)])
    cmd = ["-q", "dub", "--audio", str(work / "speech.wav"), "--expression", "neutral", "--no-mark", "--tier",
           args.tier, "--save-drive", str(work / "drive.npz"), "-o", str(args.keep or work / "dub.mp4")]
    if args.avatar:
        cmd += ["--avatar", str(args.avatar)]
    if args.mouth_model:
        cmd += ["--mouth-model", str(args.mouth_model)]
    if ideal(cmd) != 0:
        raise SystemExit("ideal dub failed")
    check = check_dub(args.keep or work / "dub.mp4", np.load(work / "drive.npz")["audio_mouth_open"])
    print(json.dumps({"avatar": str(args.avatar or "default"), "audio": str(args.audio),
                      "mouth_model": str(args.mouth_model or "shipped"),
                      "frames": check["frames_compared"], "tier": args.tier,
                      "r_rendered_vs_commanded": round(check["r_commanded"], 3),
                      "rendered_mouth_open_std": round(check["tracked_mouth_open_std"], 4),
                      "commanded_mouth_open_std": round(check["commanded_mouth_open_std"], 4)}, indent=2))


if __name__ == "__main__":
    main()
