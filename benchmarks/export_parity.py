"""Parity of every backend this machine can run against PyTorch, per tier, on real speech-driven frames.

    python benchmarks/export_parity.py --avatar AVATAR [--audio speech.wav] [--frames 8] [--fp16] [--json OUT]

Exports the avatar first when its graphs are missing or stale (`ideal export AVATAR --target onnx`, plus
TensorRT engines when TensorRT and a GPU are present). Frames: audio windows of the speech, with the
expressions and poses of the avatar's own tracked video (so the head is really rendered). Reports per backend
and tier the largest absolute difference of RGB and opacity over all pixels, and the mean opacity over the
central face region of the crop, which must be near 1 for the comparison to mean anything (the head rendered,
not the plate showing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ideal.avatar.evaluation.image_metrics import face_alpha


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", default="default")
    p.add_argument("--audio", default=str(Path(__file__).resolve().parents[2] / "shared/data/speech/test_13s.wav"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    from ideal.avatar.audio.features import compute_features, windows_for_frames
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.errors import BackendError
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.manifest import resolve_avatar
    from ideal.export.artifacts import load_export_manifest
    from ideal.export.backends import available_backends
    from ideal.export.onnx_export import export_avatar

    avatar_dir = resolve_avatar(args.avatar)
    try:
        load_export_manifest(avatar_dir)
    except BackendError:
        export_avatar(avatar_dir)
    try:
        from ideal.export.tensorrt_build import build_engines

        build_engines(avatar_dir, fp16=args.fp16)
    except BackendError as exc:
        logging.info("no TensorRT engines: %s", exc)
    loaded = load_avatar(avatar_dir, device="cpu")
    mel = compute_features(load_audio(args.audio)[:16000 * 8], loaded.mel_config)
    n = min(len(loaded.pose_track), int(7 * loaded.fps))
    idx = np.linspace(10, n - 1, args.frames).astype(int)
    windows = windows_for_frames(mel, n, loaded.fps, loaded.window, loaded.mel_config)
    # the avatar's own tracked expressions and poses: frames where the head must render
    inputs = (windows[idx], loaded.expression_track[idx], loaded.pose_track[idx])
    # FP32 parity is the contract; the INT8 refiners have their own figure (export.json validation.int8_vs_fp32)
    backends, why = available_backends(avatar_dir, "auto", fp16=args.fp16, threads=args.threads, int8=False)
    rows = []
    for tier in loaded.tiers:
        ref = loaded.backend.render(*inputs, tier)
        for name, backend in backends.items():
            if name == "torch":
                continue
            got = backend.render(*inputs, tier)
            rows.append({"backend": name, "device": getattr(backend, "device", ""), "tier": tier,
                         "fp16": args.fp16 and name == "tensorrt",
                         "max_abs_rgb": float(np.abs(got.rgb - ref.rgb).max()),
                         "max_abs_alpha": float(np.abs(got.alpha - ref.alpha).max()),
                         "max_abs_rgb_255": float(np.abs(got.rgb - ref.rgb).max() * 255),
                         "face_alpha": face_alpha(ref.alpha), "frames": len(idx)})
    for r in rows:
        print(f"{r['backend']:<12} {r['device']:<8} {r['tier']:<10} max|d rgb| {r['max_abs_rgb']:.2e} "
              f"({r['max_abs_rgb_255']:.3f}/255)  max|d alpha| {r['max_abs_alpha']:.2e}  face opacity "
              f"{r['face_alpha']:.3f}")
    for k, v in why.items():
        print(f"not run: {k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "unavailable": why}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
