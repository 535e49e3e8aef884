"""One source of config: every CLI option takes its default from its config dataclass, training recipes resolve
and flags override them, and a two-stage recipe runs both stages in one command."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from ideal.cli import build_parser, main
from ideal.configcli import add_options, parser_options


def _command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _defaults_match(parser: argparse.ArgumentParser, options, base=None) -> None:
    by_dest = {a.dest: a for a in parser_options(parser)}
    defaults = {f.name: f for f in dataclasses.fields(options.cls)}
    for option in options.options:
        f = defaults[option.field]
        expected = getattr(base, f.name) if base is not None else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        assert by_dest[option.dest].default == expected, f"{option.flag}: {by_dest[option.dest].default!r} != {expected!r}"


def test_train_defaults_are_the_default_recipes():
    from ideal.avatar.training.recipes import DEFAULT_RECIPE, RECIPES

    parser = _command_parser("train")
    _defaults_match(parser, parser.get_default("_train_options"), RECIPES[DEFAULT_RECIPE].stages[0])


def test_a_recipe_resolves_and_flags_override_it_in_every_stage():
    from ideal.avatar.training.recipes import recipe_named, stage_configs

    parser = _command_parser("train")
    args = parser.parse_args(["d", "-o", "x", "--recipe", "two-stage", "--minutes", "3", "--no-half",
                              "--eye-weight", "30"])
    first, second = stage_configs(recipe_named(args.recipe), args._train_options.given(args))
    assert (first.minutes, second.minutes) == (3.0, 3.0) and not first.half and not second.half
    assert (first.mouth_weight, second.mouth_weight) == (60.0, 80.0)  # not given: the recipe's
    assert first.eye_weight == second.eye_weight == 30.0 and first.recipe == "two-stage"
    assert first.steps == 20000  # the recipe keeps the dataclass's schedule length


def test_the_builtin_recipe_is_the_shipped_avatars():
    """The built-in avatar's recorded training config is its recipe's (paths and the machine's thread count
    aside)."""
    from ideal.avatar.manifest import DEFAULT_AVATAR_DIR
    from ideal.avatar.training.recipes import RECIPES

    recorded = json.loads((DEFAULT_AVATAR_DIR / "avatar.json").read_text())["training"]["config"]
    recipe = dataclasses.asdict(RECIPES["builtin-finetune"].stages[0])
    assert recorded.pop("init_from")
    for key, value in recorded.items():
        assert recipe[key] == value, key
    assert recipe["half"] and recipe["init_from"] is None


def test_bad_recipe_uses(capsys):
    assert main(["train", "d", "-o", "x", "--consent", "--recipe", "builtin-finetune"]) == 2
    assert "--init-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "d", "-o", "x", "--recipe", "nope"])


def test_train_help_lists_the_recipes(capsys):
    from ideal.avatar.training.recipes import RECIPES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)
    with pytest.raises(SystemExit):
        main(["train", "--list-recipes"])
    assert "two-stage" in capsys.readouterr().out


def test_two_stage_recipe_runs_both_stages(obama_dataset: Path, tmp_path: Path):
    out = tmp_path / "a"
    assert main(["-q", "train", str(obama_dataset), "-o", str(out), "--consent", "--recipe", "two-stage",
                 "--steps", "2", "--minutes", "1", "--max-frames", "24", "--output-size", "256", "--eval-every",
                 "1000", "--no-ray-culling", "--threads", "1"]) == 0
    first = json.loads((tmp_path / "a.stage1" / "avatar.json").read_text())["training"]["config"]
    second = json.loads((out / "avatar.json").read_text())["training"]["config"]
    assert first["recipe"] == second["recipe"] == "two-stage" and first["init_from"] is None
    assert second["init_from"] == str((tmp_path / "a.stage1").resolve()) and second["mouth_weight"] == 80.0


def test_mouth_train_config_is_one_class():
    from ideal.avatar.mouth import training
    from ideal.avatar.training import config

    assert not hasattr(training, "TrainConfig") and hasattr(training, "MouthTrainConfig")
    assert config.TrainConfig is not training.MouthTrainConfig


def test_config_options_types_and_given():
    @dataclasses.dataclass
    class Demo:
        size: int = dataclasses.field(default=3, metadata={"help": "a size"})
        name: str | None = dataclasses.field(default=None, metadata={"help": "a name"})
        kind: Literal["a", "b"] = dataclasses.field(default="a", metadata={"help": "a kind"})
        tiers: tuple[str, ...] | None = dataclasses.field(default=None, metadata={"help": "tiers"})
        mark: bool = dataclasses.field(default=True, metadata={"help": "a mark"})
        hidden: int = 7

    parser = argparse.ArgumentParser()
    options = add_options(parser, Demo, flags={"size": "--side"})
    args = parser.parse_args(["--side", "5", "--kind", "b", "--tiers", "x", "y", "--no-mark"])
    assert options.build(args) == Demo(size=5, kind="b", tiers=("x", "y"), mark=False)
    assert options.given(parser.parse_args(["--mark"])) == {"mark": True}
    assert options.build(parser.parse_args([]), base=Demo(size=9, hidden=1)) == Demo(size=9, hidden=1)
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])


def test_serve_builds_a_server_config_with_its_streamer_nested():
    from ideal.server.cli import config_from_args
    from ideal.server.config import ServerConfig

    parser = _command_parser("serve")
    default = config_from_args(parser.parse_args([]))
    assert default == ServerConfig(export=True)  # `ideal serve` exports at start; the rest is the dataclass
    assert default.streamer.render_budget_ms == 85.0 and default.streamer.int8
    config = config_from_args(parser.parse_args(["--render-budget-ms", "60", "--no-int8", "--silence-mouth", "rest",
                                                 "--no-synthetic-mark", "--port", "0", "--no-export"]))
    assert (config.streamer.render_budget_ms, config.streamer.int8, config.streamer.silence_mouth) == (60.0, False,
                                                                                                        "rest")
    assert not config.streamer.synthetic_mark and config.port == 0 and not config.export
    assert config.streamer.jitter_ms == ServerConfig().streamer.jitter_ms
