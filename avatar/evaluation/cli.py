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


# The settings a reproducing command needs (the batch size does not change the figures).
REPRODUCING = ("tier", "max_frames", "mouth_model", "device", "lmd_reference_px")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ideal.avatar.evaluation.runner import EvalConfig

    from ideal.configcli import add_options

    p.add_argument("avatar", nargs="+", type=Path,
                   help="avatar dir(s) to evaluate; several = several training seeds of one configuration")
    p.add_argument("--dataset", required=True, type=Path, help="prepared dataset dir the avatar was trained on")
    p.add_argument("--ablation", nargs="*", type=Path, default=[],
                   help="avatar dir(s) trained with --fusion concat on the same data/steps (one per seed)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output dir (default runs/evaluate/AVATAR-DATASET)")
    options = add_options(p, EvalConfig, fields=("tier", "max_frames", "batch_size", "lmd_reference_px",
                                                  "mouth_model", "device"))
    p.add_argument("--no-video", action="store_true", help="skip the side-by-side video")
    p.set_defaults(_eval_options=options)


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The `ideal evaluate` command that reproduces this run (from the parsed arguments, not sys.argv, so it
    is right however the CLI was invoked)."""
    from ideal.avatar.evaluation.runner import EvalConfig

    parts = ["ideal", "evaluate", *map(str, args.avatar), "--dataset", str(args.dataset)]
    if args.ablation:
        parts += ["--ablation", *map(str, args.ablation)]
    options = args._eval_options
    cfg, default = options.build(args), EvalConfig()
    for name in REPRODUCING:
        if getattr(cfg, name) != getattr(default, name):
            parts += [options.flag(name), str(getattr(cfg, name))]
    parts += ["-o", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    import torch
    from ideal.avatar.evaluation.report import markdown_table, write_report
    from ideal.avatar.evaluation.runner import run_evaluation
    from ideal.avatar.evaluation.video import write_side_by_side

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = args._eval_options.build(args)
    out = args.output or Path("runs") / "evaluate" / f"{args.avatar[0].name}-{args.dataset.name}"
    result = run_evaluation(args.avatar, args.dataset, args.ablation, cfg)
    command = command_line(args, out)
    doc = write_report(result, out, command)
    if not args.no_video:
        write_side_by_side(result, out / "side_by_side.mp4")
    print(markdown_table(doc))
    print(f"wrote {out}/metrics.json, {out}/table.md" + ("" if args.no_video else f", {out}/side_by_side.mp4"))
    return 0
