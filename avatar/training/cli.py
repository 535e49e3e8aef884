"""Train an IDEAL-NeRF avatar from a dataset dir written by `ideal prepare`.

Writes AVATAR_DIR (avatar.json, weights.pt, pose_track.npz, base_plate.npz, stats.json, loss_curve.png).
Checkpoints go to AVATAR_DIR.ckpt/ every --checkpoint-every steps and on Ctrl-C; --resume continues from
there (the --steps/--minutes budgets count the whole run, resumed parts included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ideal.avatar.errors import InputError

if TYPE_CHECKING:
    from ideal.avatar.model.config import ModelConfig

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, help="dataset dir written by `ideal prepare`")
    p.add_argument("-o", "--output", type=Path, required=True, help="avatar dir to write")
    p.add_argument("--consent", action="store_true",
                   help="confirm you have the consent of the person in the video (required when not interactive)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock training budget (default: --steps only)")
    p.add_argument("--steps", type=int, default=20000, help="maximum optimisation steps (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: auto, 1 on a busy machine)")
    p.add_argument("--fusion", choices=("eaa", "concat"), default="eaa",
                   help="eaa: self-attention alignment (the paper); concat: plain concatenation (ablation)")
    p.add_argument("--output-size", type=int, default=None,
                   help="crop render size S (multiple of 128; default from the crop size, 256..512)")
    p.add_argument("--audio-dropout", type=float, default=0.0,
                   help="probability of silencing a frame's audio window in training, so the lips follow the "
                        "expression's mouth slice (e.g. 0.7)")
    p.add_argument("--resume", action="store_true", help="continue from AVATAR_DIR.ckpt/last.pt")
    p.add_argument("--init-from", metavar="AVATAR", default=None,
                   help="fine-tune: start from this avatar's weights (trained on the same dataset) with a fresh "
                        "optimiser and learning-rate schedule, e.g. with --audio-dropout to strengthen the lips")
    p.add_argument("--mouth-weight", type=float, default=None,
                   help="extra ray-sampling weight around the mouth (default 20; the head has 6)")
    p.add_argument("--eye-weight", type=float, default=None,
                   help="extra ray-sampling weight around each eye (default 0): sharper lids, truer blinks")
    p.add_argument("--overwrite", action="store_true", help="replace an existing avatar dir")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--no-ray-culling", action="store_true",
                   help="skip measuring the occupancy grid (~20 s): every tier then renders every ray "
                        "(`ideal occupancy AVATAR` adds it later)")
    p.add_argument("--eval-every", type=int, default=500, help="held-out PSNR every N steps")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--max-frames", type=int, default=None, help=argparse.SUPPRESS)


def confirm_consent(flag: bool, dataset: Path, stdin=None) -> dict:
    """The consent record for avatar.json; asks on a terminal, demands --consent otherwise."""
    stdin = stdin or sys.stdin
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if flag:
        return {"confirmed": True, "method": "flag", "at": now}
    if not stdin.isatty():
        raise InputError("training an avatar needs the subject's consent, and --consent was not given",
                         "confirm that the person in the video agreed, then pass --consent")
    answer = input(f"Do you have the consent of the person in {dataset} to build an avatar of them? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError("consent not confirmed", "only build avatars of people who agreed to it")
    return {"confirmed": True, "method": "prompt", "at": now}


def check_output(output: Path, overwrite: bool) -> None:
    """Fail before training, not after an hour of it."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a directory", "choose another -o")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise InputError(f"{output}: already exists and is not empty", "pass --overwrite or choose another -o")
    parent = output.parent if str(output.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{output}: cannot write here ({probe} is not writable)", "choose a writable -o")


def output_size_for(crop_side: float, requested: int | None) -> int:
    if requested is not None:
        if requested % 128 or requested < 128:
            raise InputError(f"--output-size {requested}: must be a positive multiple of 128", "e.g. 256 or 384")
        return requested
    return int(min(512, max(256, -(-crop_side // 128) * 128)))


def run(args: argparse.Namespace) -> int:
    import torch

    from ideal.avatar.audio.features import AudioWindow, MelConfig
    from ideal.avatar.manifest import atomic_output_dir, load_dataset_manifest
    from ideal.avatar.model.config import ModelConfig, default_tiers
    from ideal.avatar.training.config import TrainConfig
    from ideal.avatar.training.data import crop_box, head_box_from_neutral, load_training_data
    from ideal.avatar.training.prosody_fit import fit_prosody
    from ideal.avatar.training.trainer import Trainer, set_threads
    from ideal.avatar.training.writer import write_avatar

    consent = confirm_consent(args.consent, args.dataset)
    check_output(args.output, args.overwrite)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device here", "use --device cpu")
    cfg = TrainConfig(steps=args.steps, minutes=args.minutes, seed=args.seed, device=args.device,
                      threads=args.threads, fusion=args.fusion, output_size=args.output_size,
                      checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, max_frames=args.max_frames,
                      audio_dropout=args.audio_dropout)
    if args.init_from and args.resume:
        raise InputError("--init-from and --resume both given", "use --resume to continue this run's checkpoint, "
                         "--init-from to start a new run from another avatar")
    if args.mouth_weight is not None:
        if args.mouth_weight < 0:
            raise InputError(f"--mouth-weight {args.mouth_weight}: must be >= 0", "e.g. --mouth-weight 60")
        cfg.mouth_weight = args.mouth_weight
    if args.eye_weight is not None:
        if args.eye_weight < 0:
            raise InputError(f"--eye-weight {args.eye_weight}: must be >= 0", "e.g. --eye-weight 20")
        cfg.eye_weight = args.eye_weight
    cfg.init_from = str(Path(args.init_from).resolve()) if args.init_from else None
    threads = set_threads(cfg.threads)
    manifest = load_dataset_manifest(args.dataset)
    size = output_size_for(crop_box(manifest)[2], cfg.output_size)
    window = AudioWindow(length=16, lookahead_ms=40.0)
    data = load_training_data(args.dataset, size, window, MelConfig(), max_frames=cfg.max_frames)
    box_min, box_max = head_box_from_neutral(data.neutral)
    model_cfg = ModelConfig(fusion=cfg.fusion, box_min=box_min, box_max=box_max, tiers=default_tiers(size),
                            audio_window=window.length)
    ckpt_dir = Path(str(args.output).rstrip("/") + ".ckpt")
    if args.init_from:
        model_cfg = init_model_config(args.init_from, data.crop)
    trainer = Trainer(data, cfg, model_cfg, ckpt_dir)
    if args.init_from:
        trainer.init_weights_from(Path(args.init_from))
        log.info("fine-tuning from %s", args.init_from)
    if args.resume:
        last = ckpt_dir / "last.pt"
        if not last.exists():
            raise InputError(f"--resume: no checkpoint at {last}", "start without --resume")
        trainer.load_checkpoint(last)
        log.info("resumed at step %d (%.0f s trained)", trainer.step, trainer.elapsed)
    log.info("training %s on %d frames (%d held out), crop %s -> %d px, %s fusion, %d thread(s), %s",
             args.dataset, len(data.train_idx), len(data.val_idx), data.crop, size, cfg.fusion, threads, cfg.device)
    if not trainer.run():
        print(f"interrupted at step {trainer.step}; continue with: ideal train {args.dataset} -o {args.output} "
              f"--consent --resume", file=sys.stderr)
        return 130
    prosody, prosody_stats = fit_prosody(data)
    with atomic_output_dir(args.output, overwrite=args.overwrite) as tmp:
        write_avatar(tmp, trainer, data, prosody, consent, half=args.half, prosody_stats=prosody_stats,
                     ray_culling=not args.no_ray_culling)
    last = trainer.history.val[-1]
    print(f"avatar written to {args.output}: {trainer.step} steps in {trainer.elapsed / 60:.1f} min, "
          f"{trainer.rays_per_second:.0f} rays/s, held-out head-crop PSNR "
          + ", ".join(f"{k[5:]} {v:.2f} dB" for k, v in last.items() if k.startswith("psnr_")))
    return 0


def init_model_config(avatar: str, crop: tuple[float, float, float]) -> "ModelConfig":
    """The model config of the avatar to fine-tune from, refusing one trained on another crop (another clip)."""
    from ideal.avatar.manifest import load_avatar_manifest
    from ideal.avatar.model.config import ModelConfig

    m = load_avatar_manifest(avatar)
    c = m.get("crop", {})
    theirs = (float(c.get("x0", -1)), float(c.get("y0", -1)), float(c.get("size", -1)))
    if any(abs(a - b) > 0.5 for a, b in zip(theirs, crop)):
        raise InputError(f"--init-from {avatar}: trained on another crop {theirs} (this dataset: {crop})",
                         "fine-tune from an avatar trained on this same dataset")
    return ModelConfig.from_dict(m["model"])
