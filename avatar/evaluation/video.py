"""The side-by-side video of an evaluation: one row per mode, columns real | ours | ablation | baseline,
labelled, with the held-out audio muxed so lip sync can be judged by eye and ear."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ideal.avatar.evaluation.runner import MODES, EvalRun

LABEL_ROLES = (("ours", "ours (EAA)"), ("ablation", "concat"), ("baseline", "baseline NN-audio"))


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = img.copy()
    scale = max(0.35, img.shape[0] / 512)
    cv2.rectangle(out, (0, 0), (img.shape[1], int(22 * scale) + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, int(18 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def side_by_side_frames(run: EvalRun) -> list[np.ndarray]:
    """(V) frames of shape (rows * S, cols * S, 3) uint8; the first avatar of each role is shown."""
    held = run.held
    rows = []
    for mode in MODES:
        cols = [(held.real, "real")]
        for role, label in LABEL_ROLES:
            r = next((x for x in run.runs if x.mode == mode and x.role == role), None)
            if r is not None:
                cols.append((r.crops, f"{label} - {mode}" if role != "baseline" else label))
        rows.append(cols)
    frames = []
    for i in range(len(held.index)):
        row_imgs = [np.concatenate([_label(c[i], t) for c, t in cols], axis=1) for cols in rows]
        frames.append(np.concatenate(row_imgs, axis=0))
    return frames


def write_side_by_side(run: EvalRun, path: Path) -> Path:
    from ideal.avatar.clock import FrameClock
    from ideal.avatar.video_io import VideoWriter

    held = run.held
    clock = FrameClock(held.fps)
    a = clock.frame_start_sample(int(held.index[0]))
    b = clock.frame_start_sample(int(held.index[-1]) + 1)
    with VideoWriter(path, held.fps, held.audio_16k[a:b],
                     metadata={"title": f"ideal evaluate: real | ours | ablation | baseline ({held.dataset.name})"}
                     ) as w:
        for f in side_by_side_frames(run):
            w.write(f)
    return path
