"""Train an IDEAL-NeRF avatar from a dataset dir written by `ideal prepare`.

Writes AVATAR_DIR (avatar.json, weights.pt, pose_track.npz, base_plate.npz, stats.json, loss_curve.png).
Checkpoints go to AVATAR_DIR.ckpt/ every --checkpoint-every steps and on Ctrl-C; --resume continues from
there (the --steps/--minutes budgets count the whole run, resumed parts included). Settings start from a named
recipe (--recipe, recipes.py); a two-stage recipe writes its first stage to AVATAR_DIR.stage1 and fine-tunes it,
and --resume skips a stage whose avatar is written.
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
    from ideal.avatar.avatar_manifest import Consent
    from ideal.avatar.model.config import ModelConfig
    from ideal.avatar.training.config import TrainConfig
    from ideal.avatar.training.data import TrainingData

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ideal.avatar.training.config import TrainConfig
    from ideal.avatar.training.recipes import DEFAULT_RECIPE, RECIPES

    from ideal.configcli import add_options

    p.add_argument("dataset", type=Path, help="dataset dir written by `ideal prepare`")
    p.add_argument("-o", "--output", type=Path, required=True, help="avatar dir to write")
    p.add_argument("--consent", action="store_true",
                   help="confirm you have the consent of the person in the video (required when not interactive)")
    p.add_argument("--recipe", choices=tuple(RECIPES), default=DEFAULT_RECIPE,
                   help=f"named training settings: {', '.join(RECIPES)} (default {DEFAULT_RECIPE}: "
                        f"{RECIPES[DEFAULT_RECIPE].stages[0].minutes:g} min of optimisation on a 2-core CPU); the "
                        "options below override its values")
    p.add_argument("--list-recipes", action=_ListRecipes, help="describe the recipes and exit")
    p.add_argument("--resume", action="store_true", help="continue from AVATAR_DIR.ckpt/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing avatar dir")
    settings = p.add_argument_group(
        "training settings", f"Each defaults to the recipe's value; shown here: the {DEFAULT_RECIPE} recipe's.")
    options = add_options(
        settings, TrainConfig, base=RECIPES[DEFAULT_RECIPE].stages[0],
        fields=("minutes", "steps", "seed", "device", "threads", "fusion", "output_size", "audio_dropout",
                "init_from", "mouth_weight", "eye_weight", "half", "ray_culling", "eval_every", "checkpoint_every",
                "max_frames"),
        metavars={"init_from": "AVATAR"}, helps={"max_frames": argparse.SUPPRESS})
    p.set_defaults(_train_options=options)


class _ListRecipes(argparse.Action):
    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from ideal.avatar.training.recipes import describe

        print(describe())
        parser.exit()


def confirm_consent(flag: bool, dataset: Path, stdin=None) -> Consent:
    """The consent record for avatar.json; asks on a terminal, demands --consent otherwise."""
    from ideal.avatar.avatar_manifest import Consent

    stdin = stdin or sys.stdin
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if flag:
        return Consent(confirmed=True, method="flag", at=now)
    if not stdin.isatty():
        raise InputError("training an avatar needs the subject's consent, and --consent was not given",
                         "confirm that the person in the video agreed, then pass --consent")
    answer = input(f"Do you have the consent of the person in {dataset} to build an avatar of them? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError("consent not confirmed", "only build avatars of people who agreed to it")
    return Consent(confirmed=True, method="prompt", at=now)


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


def stage_outputs(output: Path, stages: int) -> list[Path]:
    """Where each stage's avatar goes: the last one to -o, an earlier one beside it (OUTPUT.stage1, ...)."""
    base = str(output).rstrip("/")
    return [Path(f"{base}.stage{i + 1}") for i in range(stages - 1)] + [output]


def run(args: argparse.Namespace) -> int:
    import torch
    from ideal.avatar.manifest import AVATAR_MANIFEST
    from ideal.avatar.training.recipes import recipe_named, stage_configs
    from ideal.avatar.training.trainer import set_threads

    given = args._train_options.given(args)
    if given.get("init_from"):
        given["init_from"] = str(Path(given["init_from"]).resolve())
    stages = stage_configs(recipe_named(args.recipe), given)
    outputs = stage_outputs(args.output, len(stages))
    consent = confirm_consent(args.consent, args.dataset)
    if stages[0].init_from and args.resume:
        raise InputError("--init-from and --resume both given", "use --resume to continue this run's checkpoint, "
                         "--init-from to start a new run from another avatar")
    # with --resume, an earlier stage whose avatar is written is done
    done = [args.resume and out != args.output and (out / AVATAR_MANIFEST).exists() for out in outputs]
    for out, skip in zip(outputs, done):
        if not skip:
            check_output(out, args.overwrite)
    if stages[0].device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {stages[0].device}: no CUDA device here", "use --device cpu")
    threads = set_threads(stages[0].threads)
    data = _load_data(args.dataset, stages[0])
    resume = args.resume
    for i, (cfg, out) in enumerate(zip(stages, outputs)):
        if i:
            cfg.init_from = str(outputs[i - 1].resolve())
        if done[i]:
            log.info("stage %d of %d: %s is written already", i + 1, len(stages), out)
            continue
        code = _train_stage(args, data, cfg, out, consent, resume, threads, checkpoint_required=resume and not i)
        if code:
            return code
        resume = False  # the next stage starts from this one's avatar
    return 0


def _load_data(dataset: Path, cfg: TrainConfig) -> TrainingData:
    from ideal.avatar.audio.features import AudioWindow, MelConfig
    from ideal.avatar.dataset_manifest import load_dataset_manifest
    from ideal.avatar.training.data import load_training_data

    manifest = load_dataset_manifest(dataset)
    size = output_size_for(manifest.crop.size, cfg.output_size)
    window = AudioWindow(length=16, lookahead_ms=40.0)
    return load_training_data(dataset, size, window, MelConfig(), max_frames=cfg.max_frames)


def _train_stage(args: argparse.Namespace, data: TrainingData, cfg: TrainConfig, output: Path, consent: Consent,
                 resume: bool, threads: int, checkpoint_required: bool) -> int:
    """Train one stage and write its avatar; 130 when interrupted (after saving a checkpoint). A resumed later
    stage without a checkpoint was interrupted before its first one, so it starts afresh."""
    from ideal.avatar.manifest import atomic_output_dir
    from ideal.avatar.model.config import ModelConfig, default_tiers
    from ideal.avatar.training.data import head_box_from_neutral
    from ideal.avatar.training.prosody_fit import fit_prosody
    from ideal.avatar.training.recipes import DEFAULT_RECIPE
    from ideal.avatar.training.trainer import Trainer
    from ideal.avatar.training.writer import write_avatar

    if cfg.init_from:
        model_cfg = init_model_config(cfg.init_from, data.crop)
    else:
        box_min, box_max = head_box_from_neutral(data.neutral)
        model_cfg = ModelConfig(fusion=cfg.fusion, box_min=box_min, box_max=box_max,
                                tiers=default_tiers(data.size), audio_window=data.window.length)
    ckpt_dir = Path(str(output).rstrip("/") + ".ckpt")
    trainer = Trainer(data, cfg, model_cfg, ckpt_dir)
    if cfg.init_from:
        trainer.init_weights_from(Path(cfg.init_from))
        log.info("fine-tuning from %s", cfg.init_from)
    last = ckpt_dir / "last.pt"
    if resume and last.exists():
        trainer.load_checkpoint(last)
        log.info("resumed at step %d (%.0f s trained)", trainer.step, trainer.elapsed)
    elif checkpoint_required:
        raise InputError(f"--resume: no checkpoint at {last}", "start without --resume")
    log.info("training %s on %d frames (%d held out), crop %s -> %d px, %s fusion, %d thread(s), %s, recipe %s",
             args.dataset, len(data.train_idx), len(data.val_idx), data.crop, data.size, cfg.fusion, threads,
             cfg.device, cfg.recipe)
    if not trainer.run():
        recipe = "" if args.recipe == DEFAULT_RECIPE else f" --recipe {args.recipe}"
        print(f"interrupted at step {trainer.step}; continue with: ideal train {args.dataset} -o {args.output} "
              f"--consent{recipe} --resume", file=sys.stderr)
        return 130
    prosody, prosody_stats = fit_prosody(data)
    with atomic_output_dir(output, overwrite=args.overwrite) as tmp:
        write_avatar(tmp, trainer, data, prosody, consent, half=cfg.half, prosody_stats=prosody_stats,
                     ray_culling=cfg.ray_culling)
    last_val = trainer.history.val[-1]
    print(f"avatar written to {output}: {trainer.step} steps in {trainer.elapsed / 60:.1f} min, "
          f"{trainer.rays_per_second:.0f} rays/s, held-out head-crop PSNR "
          + ", ".join(f"{k[5:]} {v:.2f} dB" for k, v in last_val.items() if k.startswith("psnr_")))
    return 0


def init_model_config(avatar: str, crop: tuple[float, float, float]) -> ModelConfig:
    """The model config of the avatar to fine-tune from, refusing one trained on another crop (another clip)."""
    from ideal.avatar.avatar_manifest import load_avatar_manifest

    m = load_avatar_manifest(avatar)
    theirs = m.crop.box
    if any(abs(a - b) > 0.5 for a, b in zip(theirs, crop)):
        raise InputError(f"--init-from {avatar}: trained on another crop {theirs} (this dataset: {crop})",
                         "fine-tune from an avatar trained on this same dataset")
    return m.model
