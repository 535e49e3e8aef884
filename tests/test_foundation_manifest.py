"""Manifest validation and atomic output directories."""

from __future__ import annotations

import json

import pytest

from ideal.avatar.errors import AvatarError, InputError
from ideal.avatar.manifest import (AVATAR_FILES, AVATAR_FORMAT_VERSION, atomic_output_dir, load_avatar_manifest,
                             resolve_avatar, DEFAULT_AVATAR_DIR)


def _fake_avatar(path, version=AVATAR_FORMAT_VERSION):
    path.mkdir()
    for name in AVATAR_FILES[1:]:
        (path / name).write_bytes(b"x")
    (path / "avatar.json").write_text(json.dumps({"format_version": version}))
    return path


def test_avatar_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(AvatarError, match="no such avatar directory"):
        load_avatar_manifest(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AvatarError, match="avatar.json is missing"):
        load_avatar_manifest(empty)
    old = _fake_avatar(tmp_path / "old", version=0)
    with pytest.raises(AvatarError, match="format version 0"):
        load_avatar_manifest(old)
    ok = _fake_avatar(tmp_path / "ok")
    (ok / "weights.pt").unlink()
    with pytest.raises(AvatarError, match="missing weights.pt"):
        load_avatar_manifest(ok)
    (ok / "avatar.json").write_text("{not json")
    with pytest.raises(AvatarError, match="corrupt manifest"):
        load_avatar_manifest(ok)


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "half.npy").write_bytes(b"1")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_output_dir(target) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok"
    with pytest.raises(InputError, match="already exists"):
        with atomic_output_dir(target):
            pass


def test_default_avatar_resolution():
    assert resolve_avatar(None) == DEFAULT_AVATAR_DIR == resolve_avatar("default")
    assert str(resolve_avatar("/x/y")) == "/x/y"
