"""`ideal evaluate AVATAR --dataset DATASET [--ablation AVATAR_CONCAT]`: held-out metrics of an avatar.

Reconstruction (tracked expressions drive the avatar) and audio-driven (mouth from the audio-to-mouth model)
modes, head-crop L1/PSNR/SSIM, tracker-based LMD/LMDV/AU/Pose-D, against the --fusion concat ablation and the
nearest-training-frame baseline on the same frames. Writes metrics.json, table.md and side_by_side.mp4.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("avatar", nargs="+", type=Path,
                   help="avatar dir(s) to evaluate; several = several training seeds of one configuration")
    p.add_argument("--dataset", required=True, type=Path, help="prepared dataset dir the avatar was trained on")
    p.add_argument("--ablation", nargs="*", type=Path, default=[],
                   help="avatar dir(s) trained with --fusion concat on the same data/steps (one per seed)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output dir (default runs/evaluate/AVATAR-DATASET)")
    p.add_argument("--tier", default=None, help="quality tier to render (default: the best one)")
    p.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N held-out frames")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lmd-reference-px", type=int, default=512,
                   help="LMD/LMDV are reported in pixels of the frame scaled to this width")
    p.add_argument("--mouth-model", default=None, help="audio-to-mouth model dir (default: the shipped one)")
    p.add_argument("--device", default="cpu", help="torch device for the PyTorch backend")
    p.add_argument("--no-video", action="store_true", help="skip the side-by-side video")


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The `ideal evaluate` command that reproduces this run (from the parsed arguments, not sys.argv, so it
    is right however the CLI was invoked)."""
    parts = ["ideal", "evaluate", *map(str, args.avatar), "--dataset", str(args.dataset)]
    if args.ablation:
        parts += ["--ablation", *map(str, args.ablation)]
    for flag, value, default in (("--tier", args.tier, None), ("--max-frames", args.max_frames, None),
                                 ("--mouth-model", args.mouth_model, None), ("--device", args.device, "cpu"),
                                 ("--lmd-reference-px", args.lmd_reference_px, 512)):
        if value != default:
            parts += [flag, str(value)]
    parts += ["-o", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    import torch

    from ideal.avatar.evaluation.report import markdown_table, write_report
    from ideal.avatar.evaluation.runner import EvalConfig, run_evaluation
    from ideal.avatar.evaluation.video import write_side_by_side

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = EvalConfig(tier=args.tier, batch_size=args.batch_size, max_frames=args.max_frames, device=args.device,
                     mouth_model=args.mouth_model, lmd_reference_px=args.lmd_reference_px)
    out = args.output or Path("runs") / "evaluate" / f"{args.avatar[0].name}-{args.dataset.name}"
    result = run_evaluation(args.avatar, args.dataset, args.ablation, cfg)
    command = command_line(args, out)
    doc = write_report(result, out, command)
    if not args.no_video:
        write_side_by_side(result, out / "side_by_side.mp4")
    print(markdown_table(doc))
    print(f"wrote {out}/metrics.json, {out}/table.md" + ("" if args.no_video else f", {out}/side_by_side.mp4"))
    return 0
