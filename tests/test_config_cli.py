"""One source of config: every CLI option takes its default from its config dataclass, training recipes resolve
and flags override them, and a two-stage recipe runs both stages in one command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Literal

import pytest

from ideal.cli import build_parser, main
from ideal.configcli import ConfigOptions, add_options


def _command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _config_options(parser: argparse.ArgumentParser) -> list[ConfigOptions]:
    """The ConfigOptions a command keeps in its parser defaults (one or a tuple of them)."""
    found = []
    for value in parser._defaults.values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, ConfigOptions):
                found.append(item)
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


# Options with a default that are no field of a config dataclass: what to act on, the recipe, TensorRT build
# switches, the mouth model's feature kind and lookahead (parts of config objects: FeatureSpec, AudioWindow, whose
# defaults the help shows from mouth.config), and `ideal occupancy`'s grid constants.
NOT_CONFIG = {
    "train": {"recipe"}, "export": {"avatar", "target", "workspace_gb"}, "evaluate": {"ablation"},
    "serve": {"driver", "ice_server"}, "mouth train": {"features", "lookahead_ms"},
    "occupancy": {"opacity", "resolution"},
}


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_default_comes_from_its_config_dataclass(command: str):
    """Each derived option's default is its dataclass field's default (or, where a command starts from a preset,
    the preset's); an option with a default of its own that is not derived is listed in NOT_CONFIG."""
    parser = _subparsers(build_parser())[command]
    actions = {a.dest: a for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))}
    derived = set()
    for options in _config_options(parser):
        fields = {f.name: f for f in dataclasses.fields(options.cls)}
        for option in options.options:
            f = fields[option.field]
            if options.base is not None:
                expected = getattr(options.base, f.name)
            else:
                expected = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            assert actions[option.dest].default == expected, (option.flag, actions[option.dest].default, expected)
            derived.add(option.dest)
    own = {dest for dest, a in actions.items()
           if dest not in derived and a.default not in (None, False, [], argparse.SUPPRESS)}
    assert own <= NOT_CONFIG.get(command, set()), f"ideal {command}: defaults restated by hand: {own}"


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


def test_two_stage_recipe_runs_both_stages_and_resumes_after_the_first(obama_dataset: Path, tmp_path: Path):
    out = tmp_path / "a"
    argv = ["-q", "train", str(obama_dataset), "-o", str(out), "--consent", "--recipe", "two-stage", "--steps", "2",
            "--minutes", "1", "--max-frames", "24", "--output-size", "256", "--eval-every", "1000",
            "--no-ray-culling", "--threads", "1"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "a.stage1" / "avatar.json").read_text())["training"]["config"]
    second = json.loads((out / "avatar.json").read_text())["training"]["config"]
    assert first["recipe"] == second["recipe"] == "two-stage" and first["init_from"] is None
    assert second["init_from"] == str((tmp_path / "a.stage1").resolve()) and second["mouth_weight"] == 80.0
    # stopped before the second stage's first checkpoint: --resume keeps the first stage and redoes the second
    written = (tmp_path / "a.stage1" / "avatar.json").stat().st_mtime_ns
    shutil.rmtree(out)
    assert main([*argv, "--resume"]) == 0
    assert (out / "avatar.json").exists()
    assert (tmp_path / "a.stage1" / "avatar.json").stat().st_mtime_ns == written


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
        no_cache: bool = dataclasses.field(default=False, metadata={"help": "no cache"})
        hidden: int = 7

    parser = argparse.ArgumentParser()
    options = add_options(parser, Demo, flags={"size": "--side"})
    args = parser.parse_args(["--side", "5", "--kind", "b", "--tiers", "x", "y", "--no-mark"])
    assert options.build(args) == Demo(size=5, kind="b", tiers=("x", "y"), mark=False)
    assert options.given(parser.parse_args(["--mark", "--no-cache"])) == {"mark": True, "no_cache": True}
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
