"""Named training recipes: the settings behind the project's measured avatars, in code rather than as flags in
the docs. `ideal train --recipe NAME` starts from one; explicit flags override its values (in every stage).

A recipe has one or two stages. A second stage fine-tunes the first one's written avatar (`init_from`) with a
fresh optimiser and schedule; `ideal train` runs both, writing the first stage's avatar beside the output as
OUTPUT.stage1. Times are optimisation minutes on one thread of this project's 2-core CPU (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ideal.avatar.errors import InputError
from ideal.avatar.training.config import TrainConfig

DEFAULT_RECIPE = "one-stage"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # what it is for, what it costs and what it reached
    stages: tuple[TrainConfig, ...]
    needs_init_from: bool = False  # a fine-tune of an avatar the user names with --init-from


def _stage(name: str, **values: object) -> TrainConfig:
    return TrainConfig(recipe=name, **values)  # type: ignore[arg-type]


# The mouth-focused settings of every measured avatar: the field must read the mouth from the expression slice
# (audio window silenced on 85% of frames) and sample the lips densely.
_MOUTH_FOCUS = {"audio_dropout": 0.85, "threads": 1, "half": True}

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("quick", "smoke test: 1 minute of optimisation (~2 min in all); a recognisable head, far from converged",
           (_stage("quick", minutes=1.0, eval_every=30, checkpoint_every=1_000_000),)),
    Recipe("one-stage", "from scratch in one run, 45 min (~48 min in all): obama head-box PSNR 31.6 / 32.0 / 32.2 "
           "dB (fast / coarse / refined); lips follow a new voice at r 0.61",
           (_stage("one-stage", minutes=45.0, mouth_weight=60.0, **_MOUTH_FOCUS),)),
    Recipe("two-stage", "from scratch, 34 min + a 20 min mouth-focused fine-tune (~57 min in all): obama 31.9 / "
           "32.1 / 32.4 dB, lips r 0.69; german and macron ahead of the nearest-frame baseline on every metric",
           (_stage("two-stage", minutes=34.0, mouth_weight=60.0, **_MOUTH_FOCUS),
            _stage("two-stage", minutes=20.0, mouth_weight=80.0, **_MOUTH_FOCUS))),
    Recipe("builtin-finetune", "the built-in avatar's last stage: a 25 min mouth-focused fine-tune of --init-from "
           "AVATAR (the shipped one started from 56 min of an older trainer; then `ideal mouth calibrate`)",
           (_stage("builtin-finetune", minutes=25.0, mouth_weight=80.0, eval_every=400, **_MOUTH_FOCUS),),
           needs_init_from=True),
)}


def recipe_named(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise InputError(f"--recipe {name}: no such recipe", f"use one of {', '.join(RECIPES)} "
                         "(`ideal train --list-recipes` describes them)") from None


def stage_configs(recipe: Recipe, overrides: dict[str, object]) -> list[TrainConfig]:
    """The recipe's stages with the command line's values on top (a second stage's `init_from` stays the first
    stage's output, which the caller fills in)."""
    if recipe.needs_init_from and not overrides.get("init_from"):
        raise InputError(f"--recipe {recipe.name} fine-tunes an avatar, and --init-from was not given",
                         "pass --init-from AVATAR (an avatar trained on this dataset)")
    if len(recipe.stages) > 1 and overrides.get("init_from"):
        raise InputError(f"--init-from with --recipe {recipe.name}: its second stage starts from its first",
                         "use a one-stage recipe to fine-tune an avatar of your own")
    return [replace(stage, **overrides).validate() for stage in recipe.stages]  # type: ignore[arg-type]


def describe() -> str:
    return "\n".join(f"  {r.name:17s} {r.summary}" + (" [default]" if r.name == DEFAULT_RECIPE else "")
                     for r in RECIPES.values())
