"""Manifest validation, the typed manifests' round trip and atomic output directories."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ideal.avatar.avatar_manifest import AvatarManifest, load_avatar_manifest, write_avatar_manifest
from ideal.avatar.dataset_manifest import DatasetManifest, load_dataset_manifest
from ideal.avatar.errors import AvatarError, InputError
from ideal.avatar.manifest import (AVATAR_FILES, AVATAR_FORMAT_VERSION, DEFAULT_AVATAR_DIR, atomic_output_dir,
                                   resolve_avatar)


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


def test_shipped_avatar_manifest_round_trips_exactly():
    raw = json.loads((DEFAULT_AVATAR_DIR / "avatar.json").read_text())
    m = load_avatar_manifest(DEFAULT_AVATAR_DIR)
    assert m.to_dict() == raw and AvatarManifest.from_dict(m.to_dict()).to_dict() == raw
    # typed access to what the loader, exporter and streamer read
    assert (m.fps, m.width, m.height, m.crop.box) == (25.0, 450, 450, (0.0, 0.0, 450.0))
    assert m.audio_window.length == m.model.audio_window == 16 and m.mel.n_mels == 80
    assert m.tiers["coarse"].samples == 12 and m.ray_culling is not None and m.ray_culling.tiers["fast"].of == 4096
    assert m.mouth_calibration is not None and m.mouth_calibration.silent_frames == raw["mouth_calibration"][
        "silent_frames"]
    assert m.training.split.val == (450, 500)
    assert "command" in m.training.extra  # keys added by hand are kept, not refused


def test_dataset_manifest_round_trips_exactly(obama_dataset: Path):
    raw = json.loads((obama_dataset / "dataset.json").read_text())
    m = load_dataset_manifest(obama_dataset)
    assert m.to_dict() == raw and DatasetManifest.from_dict(m.to_dict()).to_dict() == raw
    assert json.dumps(m.to_dict(), indent=2) == json.dumps(raw, indent=2)  # the order of keys too
    assert m.split.train[0] == 0 and m.split.val[1] == m.n_frames and m.crop.contains_all_boxes is not None


def test_rewriting_an_avatar_manifest_keeps_what_it_does_not_change(tmp_path: Path):
    av = shutil.copytree(DEFAULT_AVATAR_DIR, tmp_path / "av", ignore=shutil.ignore_patterns("exported"))
    raw = json.loads((av / "avatar.json").read_text())
    (av / "avatar.json").write_text(json.dumps({**raw, "note": "added by hand"}))
    write_avatar_manifest(av, replace(load_avatar_manifest(av), ray_culling=None))
    written = json.loads((av / "avatar.json").read_text())
    assert written == {k: v for k, v in raw.items() if k != "ray_culling"} | {"note": "added by hand"}
    assert not list(av.glob("*.partial"))


def test_a_missing_or_mistyped_key_names_the_file_and_the_key(tmp_path: Path):
    av = shutil.copytree(DEFAULT_AVATAR_DIR, tmp_path / "av", ignore=shutil.ignore_patterns("exported"))
    raw = json.loads((av / "avatar.json").read_text())
    (av / "avatar.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "tiers"}))
    with pytest.raises(AvatarError, match=r"avatar\.json: key 'tiers' is missing.*ideal train"):
        load_avatar_manifest(av)
    (av / "avatar.json").write_text(json.dumps({**raw, "training": {**raw["training"], "steps": "many"}}))
    with pytest.raises(AvatarError, match=r"key 'training\.steps' should be a whole number"):
        load_avatar_manifest(av)
    bad_calibration = {**raw["mouth_calibration"], "scale": [1.0, -2.0]}
    (av / "avatar.json").write_text(json.dumps({**raw, "mouth_calibration": bad_calibration}))
    with pytest.raises(AvatarError, match=r"key 'mouth_calibration'.*ideal mouth calibrate"):
        load_avatar_manifest(av)
    # keys that older avatars of this format version lack are optional
    old = {k: v for k, v in raw.items() if k not in ("mouth_calibration", "ray_culling")}
    (av / "avatar.json").write_text(json.dumps(old))
    m = load_avatar_manifest(av)
    assert m.mouth_calibration is None and m.ray_culling is None and m.to_dict() == old


def test_dataset_manifest_errors_name_the_problem(obama_dataset: Path, tmp_path: Path):
    ds = tmp_path / "ds"
    ds.mkdir()
    for p in obama_dataset.iterdir():  # links: the frames are not copied
        (ds / p.name).symlink_to(p)
    raw = json.loads((obama_dataset / "dataset.json").read_text())
    (ds / "dataset.json").unlink()
    (ds / "dataset.json").write_text(json.dumps({**raw, "format_version": 7}))
    with pytest.raises(InputError, match="dataset format version 7"):
        load_dataset_manifest(ds)
    (ds / "dataset.json").write_text(json.dumps({**raw, "crop": {**raw["crop"], "x0": None}}))
    with pytest.raises(InputError, match=r"dataset\.json: key 'crop\.x0' should be a whole number.*ideal prepare"):
        load_dataset_manifest(ds)
    (ds / "dataset.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "split"}))
    with pytest.raises(InputError, match="key 'split' is missing"):
        load_dataset_manifest(ds)
