"""Each quality tier against the finest one on the same inputs (benchmarks/streamer_realtime.py): PSNR over
the full composited frame and over the head crop, each tier's output resolution and its render time."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from ideal.avatar.audio.features import compute_features, window_for_frame
from ideal.avatar.evaluation.image_metrics import psnr
from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.avatar.mouth.features import compute_mouth_features, padding_value
from ideal.avatar.mouth.inference import frame_end_indices, gather_windows


def tier_quality(engine: Any, audio_16k: np.ndarray, n_frames: int = 25, stride: int = 10) -> dict[str, dict]:
    """Each tier against the finest one on the same inputs: PSNR (dB) of the full frame and of the head crop,
    the crop and output sizes, and the render time per frame (batch 1) on this machine."""
    mel = compute_features(audio_16k, engine.mel_config)
    idx = [i * stride for i in range(n_frames)]
    audio = np.stack([window_for_frame(mel, i, engine.fps, engine.window, engine.mel_config) for i in idx])
    expr = np.zeros((len(idx), EXPRESSION_DIM), np.float32)
    # the mouth from the audio-to-mouth model, so the comparison includes moving lips
    feats = compute_mouth_features(audio_16k, engine.mouth.spec)
    ends = frame_end_indices(max(idx) + 1, engine.fps, engine.mouth.window, engine.mouth.spec)[idx]
    expr[:, SLICES["mouth"].indices] = engine.mouth.predict(gather_windows(feats, ends, engine.mouth.window.length,
                                                       padding_value(engine.mouth.spec)))
    pose = engine.pose_track[np.asarray(idx) % len(engine.pose_track)]
    plates = [engine.plate_index(p) for p in pose]
    finest = engine.ordered_tiers[-1]
    crops: dict[str, np.ndarray] = {}
    frames: dict[str, list[np.ndarray]] = {}
    cost: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for t in engine.ordered_tiers:
        rgbs, fr, secs = [], [], []
        for k in range(len(idx)):
            t0 = time.perf_counter()
            r = engine.backend.render(audio[k:k + 1], expr[k:k + 1], pose[k:k + 1], t)
            secs.append(time.perf_counter() - t0)
            rgbs.append(np.clip(r.rgb[0] * r.alpha[0], 0, 1))
            fr.append(engine.compose(r.rgb[0], r.alpha[0], plates[k]))
        sizes[t] = rgbs[0].shape[0]
        crops[t], frames[t], cost[t] = np.stack(rgbs), fr, float(np.median(secs))
    ref_size = sizes[finest]
    out = {}
    for t in engine.ordered_tiers:
        c = crops[t]
        if sizes[t] != ref_size:
            c = np.stack([cv2.resize(x, (ref_size, ref_size), interpolation=cv2.INTER_LINEAR) for x in c])
        psnr_crop = float(np.mean([psnr(a, b) for a, b in zip(c, crops[finest])]))
        psnr_full = float(np.mean([psnr(a, b) for a, b in zip(frames[t], frames[finest])]))
        h, w = frames[t][0].shape[:2]
        tier = engine.tiers[t]
        ref = t == finest  # the reference itself: PSNR would be infinite
        out[t] = {"psnr_crop_db_vs_" + finest: None if ref else round(psnr_crop, 2),
                  "psnr_frame_db_vs_" + finest: None if ref else round(psnr_full, 2),
                  "rays": f"{tier.rays}x{tier.rays}x{tier.samples}", "crop_px": sizes[t], "output_size": [w, h],
                  "render_ms_batch1": round(1000.0 * cost[t], 1)}
    return out
