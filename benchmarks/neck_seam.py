"""Does the background plate show through between the rendered chin and the neck? Dub real speech with the
avatar (mouth from the audio, neutral upper face), and on every frame look at the strip just above the neck
(where the source frame's head mask ended, from the dataset's masks): a row of that strip where more than a
quarter of the pixels match the background plate is a visible line. Counts the frames that have one.

    python benchmarks/neck_seam.py --avatar AVATAR --dataset DATASET [--audio SPEECH] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRIP_FRACTION = 0.03  # of the frame's short side, above the neck's top row
MATCH = 30  # sum of |RGB difference| to the plate below which a pixel is "background"


def neck_strips(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(row, columns) of the strip above the neck of one frame's labels: columns where the base region's top
    meets the head mask, rows from the base top up STRIP_FRACTION of the short side."""
    from ideal.avatar.compose import neck_top

    _, top, meets = neck_top(labels)
    cols = np.flatnonzero(meets)
    if not len(cols):
        return []
    k = max(1, int(round(STRIP_FRACTION * min(labels.shape))))
    lo, hi = int(top[cols].min()) - k, int(top[cols].max()) + 2
    return [(r, cols) for r in range(max(lo, 0), hi)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--avatar", default=None, help="avatar dir (default: the built-in one)")
    ap.add_argument("--dataset", type=Path, required=True, help="the dataset the avatar was trained on (its masks)")
    ap.add_argument("--audio", type=Path, default=REPO.parent / "shared/data/speech/test_13s.wav")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--tier", default="coarse")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import cv2

    from ideal.avatar.audio.io import load_audio, write_wav
    from ideal.avatar.compose import BasePlate
    from ideal.avatar.manifest import resolve_avatar
    from ideal.cli import main as ideal

    avatar = resolve_avatar(args.avatar)
    work = Path(tempfile.mkdtemp(prefix="neck_seam_"))
    write_wav(work / "speech.wav", load_audio(args.audio)[: int(args.seconds * 16000)])
    cmd = ["-q", "dub", "--avatar", str(avatar), "--audio", str(work / "speech.wav"), "--expression", "neutral",
           "--no-mark", "--tier", args.tier, "--save-drive", str(work / "drive.npz"), "-o", str(work / "dub.mp4")]
    if ideal(cmd) != 0:
        raise SystemExit("ideal dub failed")
    with np.load(work / "drive.npz") as z:
        track = np.asarray(z["track_index"])
    plate = BasePlate.load(avatar / "base_plate.npz")
    background = plate.background.astype(np.int32)
    cap = cv2.VideoCapture(str(work / "dub.mp4"))
    flagged, worst, i = [], 0, 0
    strips: dict[int, list] = {}
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = int(track[min(i, len(track) - 1)])
        if t not in strips:
            labels = cv2.imread(str(args.dataset / "masks" / f"{t:06d}.png"), cv2.IMREAD_UNCHANGED)
            strips[t] = neck_strips(labels)
        rgb = bgr[:, :, ::-1].astype(np.int32)
        rows = 0
        for r, cols in strips[t]:
            match = np.abs(rgb[r, cols] - background[r, cols]).sum(axis=-1) < MATCH
            rows += int(match.mean() > 0.25)
        if rows:
            flagged.append(i)
        worst = max(worst, rows)
        i += 1
    result = {"avatar": str(avatar), "frames": i, "frames_with_a_line": len(flagged), "worst_rows": worst,
              "flagged": flagged[:50], "audio": str(args.audio), "seconds": args.seconds, "tier": args.tier}
    print(json.dumps({k: v for k, v in result.items() if k != "flagged"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
