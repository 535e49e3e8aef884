"""Every stage is reachable from the one CLI and has --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ideal.cli import COMMANDS, build_parser


def test_every_stage_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = sorted(set(COMMANDS) - set(sub.choices))
    assert not missing, f"stages without a module: {missing}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_stage_help(command, capsys):
    from ideal.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: ideal " + command in capsys.readouterr().out


def test_top_level_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "ideal", "--help"], capture_output=True, text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out
