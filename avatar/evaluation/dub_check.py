"""Does a dubbed video's mouth follow its speech? Track the rendered video with the prepare tracker and
correlate the mouth opening it measures with (a) the mouth opening the audio model commanded and (b) the
speech loudness envelope (independent of every model of the project). The one rendered-lip check: `ideal dub`
output here, benchmarks/lip_follow.py over a fresh dub.

`python -m ideal.avatar.evaluation.dub_check OUT.mp4 [--drive OUT.drive.npz]` (the .drive.npz is what
`ideal dub --save-drive` writes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ideal.avatar.evaluation.face_metrics import pearson


def loudness_envelope(audio_16k: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Per-frame RMS in dB, floored at -60 dBFS: (n,)."""
    from ideal.avatar.mouth.gate import frame_levels_db

    lv = frame_levels_db(audio_16k, fps)
    lv = np.concatenate([lv, np.full(max(0, n - len(lv)), -120.0)])[:n]
    return np.maximum(lv, -60.0)


def check_dub(video: str | Path, commanded_mouth_open: np.ndarray | None = None) -> dict:
    """{"r_loudness", "tracked_mouth_open_mean/std", "face_found", "n_frames"}; with the commanded mouth opening
    (N,) also "r_commanded" and "commanded_mouth_open_std" over the "frames_compared" both have."""
    from ideal.avatar.expression import mouth_opening
    from ideal.avatar.prepare import track_clip

    clip = track_clip(video, progress=False)
    tracked = mouth_opening(clip.expression)
    env = loudness_envelope(clip.audio_16k, clip.fps, clip.frame_count)
    out = {
        "n_frames": int(clip.frame_count),
        "face_found": float((~clip.interpolated).mean()),
        "tracked_mouth_open_mean": float(tracked.mean()),
        "tracked_mouth_open_std": float(tracked.std()),
        "r_loudness": pearson(env, tracked),
    }
    if commanded_mouth_open is not None:
        m = min(len(commanded_mouth_open), len(tracked))
        commanded = np.asarray(commanded_mouth_open)[:m]
        out["frames_compared"] = m
        out["r_commanded"] = pearson(commanded, tracked[:m])
        out["commanded_mouth_open_std"] = float(np.std(commanded))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", type=Path)
    p.add_argument("--drive", type=Path, default=None, help="the .drive.npz written by ideal dub --save-drive")
    args = p.parse_args(argv)
    cmd = None
    if args.drive is not None:
        with np.load(args.drive) as z:
            cmd = z["audio_mouth_open"]
    print(json.dumps(check_dub(args.video, cmd), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
