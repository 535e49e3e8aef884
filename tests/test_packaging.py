"""What installing ideal-nerf puts on the import path: one namespace, `ideal`, and nothing generic.

The repository keeps a top-level folder per stage (avatar/, export/, streamer/, server/, web/); setup.py installs
them as ideal.avatar, ideal.export, ... so a user's own `server.py` or `export.py` can never be imported in
their place, and ours never shadow theirs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("avatar", "export", "streamer", "server", "web")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_no_generic_top_level_module_is_importable(tmp_path: Path):
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps({{n: u.find_spec(n) is not None for n in {STAGES!r}}})); "
             f"print(json.dumps({{n: u.find_spec('ideal.' + n) is not None for n in {STAGES!r}}}))")
    result = _python(probe, tmp_path)
    assert result.returncode == 0, result.stderr
    bare, namespaced = (json.loads(line) for line in result.stdout.splitlines())
    assert not any(bare.values()), f"generic top-level modules installed: {[n for n, v in bare.items() if v]}"
    assert all(namespaced.values()), namespaced


def test_the_cli_runs_from_a_folder_holding_server_py_and_export_py(tmp_path: Path):
    for name in ("server.py", "export.py", "streamer.py", "avatar.py", "web.py"):
        (tmp_path / name).write_text("raise SystemExit('the user file was imported instead of ideal-nerf')\n")
    for argv in (["--help"], ["serve", "--help"], ["export", "--help"]):
        result = subprocess.run([sys.executable, "-m", "ideal", *argv], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "user file" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_built_wheel_holds_only_the_ideal_namespace_with_its_assets(tmp_path: Path):
    # Built from a copy: setuptools builds in the source tree, and a build/ left there from an earlier build
    # keeps files the repository no longer has (and hides files a fresh build would miss).
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                                ".mypy_cache", ".ruff_cache", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("ideal_nerf-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"ideal"}, top
    for expected in ("ideal/avatar/assets/default_avatar/avatar.json", "ideal/avatar/assets/mouth_model/mouth.json",
                     "ideal/web/index.html", "ideal/web/app.js", "ideal/server/app.py", "ideal/cli.py"):
        assert expected in names, expected
