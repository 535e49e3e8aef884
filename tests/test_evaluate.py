"""`ideal evaluate` end to end on the tiny trained avatar and the tiny dataset it was trained on."""

from __future__ import annotations

import json
from pathlib import Path


from ideal.avatar.evaluation.runner import HEADLINE, MODES
from ideal.avatar.video_io import read_frames, read_metadata
from ideal.cli import main


def _path(fixture) -> Path:
    return Path(getattr(fixture, "path", fixture))


def test_evaluate_end_to_end(tiny_avatar, mouth_model_dir, obama_dataset, tmp_path, capsys):
    avatar, dataset = _path(tiny_avatar), _path(obama_dataset)
    out = tmp_path / "eval"
    # the same avatar as its own "ablation": the mechanics of the comparison, and a determinism check
    code = main(["evaluate", str(avatar), "--dataset", str(dataset), "--ablation", str(avatar),
                 "--mouth-model", str(mouth_model_dir), "--tier", "coarse", "--max-frames", "10", "-o", str(out)])
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["n_heldout"] == 10 and doc["command"].startswith("ideal evaluate")
    summary = doc["summary"]
    for mode in MODES:
        for role in ("ours", "ablation", "baseline", "floor"):
            cells = summary[mode][role]
            for k in HEADLINE:
                assert k in cells, (mode, role, k)
        ours, abl, base, floor = (summary[mode][r] for r in ("ours", "ablation", "baseline", "floor"))
        # the same avatar rendered twice gives the same figures
        assert abs(ours["psnr"]["mean"] - abl["psnr"]["mean"]) < 1e-6
        # the baseline is a real photograph of another moment: imperfect but finite
        assert 10 < base["psnr"]["mean"] < 60 and base["lmd"]["mean"] > floor["lmd"]["mean"]
        # the floor (real crops through the render-size path) is near perfect on landmarks
        assert floor["lmd"]["mean"] < 2.0 and floor["face_found"]["mean"] == 1.0
        assert 0 < ours["psnr"]["mean"] < 60 and 0 <= ours["ssim"]["mean"] <= 1
    # the audio mode drove the mouth from the audio model, not from the tracked frames
    drive = doc["audio_drive"]
    assert drive["mean_abs_diff"] > 0 and drive["tracked_mouth_open_std"] > 0
    # every method has a face-detection rate (a 40 s avatar may still be too blurry for the tracker)
    assert 0.0 <= summary["audio"]["ours"]["face_found"]["mean"] <= 1.0
    table = (out / "table.md").read_text()
    assert "baseline (NN audio)" in table and "concat ablation" in table
    frames = read_frames(out / "side_by_side.mp4")
    s = doc["render_size_px"]
    assert frames.shape[0] == 10 and frames.shape[1:3] == (2 * s, 4 * s)
    assert read_metadata(out / "side_by_side.mp4")["comment"].startswith("synthetic")
    assert "ours (EAA)" in capsys.readouterr().out


def test_evaluate_bad_dataset(tiny_avatar, tmp_path, capsys):
    assert main(["evaluate", str(_path(tiny_avatar)), "--dataset", str(tmp_path / "none"),
                 "-o", str(tmp_path / "e")]) == 2
    assert "none" in capsys.readouterr().err
