"""CPU cost of each per-frame step of `ideal prepare`, measured as process CPU time (all threads), so the
figure holds on a busy shared machine where wall-clock time does not.

    python -m avatar.prepare.bench ../shared/data/train/macron_50s.mp4 --frames 300
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ideal.avatar.clock import DEFAULT_FPS


def measure(video: Path, n_frames: int, fps: float = DEFAULT_FPS) -> dict[str, float]:
    """Mean CPU milliseconds per frame of each step over the first `n_frames` frames of `video`."""
    import tempfile

    import cv2

    from ideal.avatar.prepare.segment import PlateBuilder, Segmenter
    from ideal.avatar.prepare.tracking import FaceTracker
    from ideal.avatar.prepare.video import iter_frames, probe_video

    info = probe_video(video)
    tracker = FaceTracker(info.width, info.height)
    seg = Segmenter(info.width, info.height)
    plate = PlateBuilder(info.width, info.height, n_frames)
    cost: dict[str, float] = defaultdict(float)
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        frames = iter_frames(video, fps)
        while n < n_frames:
            t = time.process_time()
            item = next(frames, None)
            if item is None:
                break
            i, _, rgb = item
            cost["decode + rgb"] += time.process_time() - t
            t = time.process_time()
            lm = tracker.process(rgb)
            cost["face mesh (2 faces, irises)"] += time.process_time() - t
            t = time.process_time()
            prob = seg.person(rgb)
            cost["selfie segmentation"] += time.process_time() - t
            if lm is not None:
                t = time.process_time()
                labels = seg.labels(prob, lm)
                plate.add(i, rgb, labels)
                cost["head/torso labels + plate sample"] += time.process_time() - t
                t = time.process_time()
                cv2.imwrite(f"{tmp}/m.png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                cost["mask PNG"] += time.process_time() - t
            t = time.process_time()
            cv2.imwrite(f"{tmp}/f.jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cost["frame JPEG q95"] += time.process_time() - t
            n += 1
        t = time.process_time()
        plate.build()
        cost["plate build (once, per frame)"] += time.process_time() - t
    obs = tracker.result()
    tracker.close()
    seg.close()
    from ideal.avatar.prepare.track import solve_pose_and_expression

    t = time.process_time()
    solve_pose_and_expression(obs.landmarks, obs.detected, fps)
    cost["pose + expressions (once, per frame)"] += time.process_time() - t
    return {k: 1000.0 * v / max(n, 1) for k, v in cost.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    ms = measure(args.video, args.frames)
    for k, v in ms.items():
        print(f"{k:40s} {v:7.2f} ms CPU / frame")
    total = float(np.sum(list(ms.values())))
    print(f"{'total':40s} {total:7.2f} ms CPU / frame -> {1000.0 / total:.1f} frames per CPU-second")


if __name__ == "__main__":
    main()
