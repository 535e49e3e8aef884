"""`ideal prepare` on real data: the dataset contract (files, shapes, manifest) and tracking quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.expression import EXPRESSION_DIM, NOSE_TIP, RIGID_POINTS, face_height, mouth_opening
from ideal.avatar.dataset_manifest import load_dataset_manifest
from ideal.avatar.manifest import DATASET_FORMAT_VERSION, sha256_file

N = 175  # 7 s at 25 fps


def test_dataset_files_and_manifest(obama_dataset: Path, obama_clip):
    m = load_dataset_manifest(obama_dataset)  # validates every DATASET_FILES entry exists
    assert m.format_version == DATASET_FORMAT_VERSION
    assert (m.fps, m.width, m.height, m.n_frames) == (25.0, 450, 450, N)
    assert m.camera.model == "weak_perspective"
    assert m.split.to_dict() == {"train": [0, 157], "val": [157, N]}
    assert m.faces.detected >= 0.99 * N and m.faces.detected + m.faces.interpolated == N
    assert m.source.sha256 == sha256_file(obama_clip)
    assert m.audio.av_offset_method == "skipped" and m.audio.mel["kind"] == "causal_logmel"
    assert {"mediapipe", "numpy", "av"} <= set(m.tools)
    assert sorted(p.name for p in (obama_dataset / "frames").iterdir())[-1] == f"{N - 1:06d}.jpg"
    assert len(list((obama_dataset / "masks").iterdir())) == N
    assert not list(obama_dataset.parent.glob(".obama.partial-*"))


def test_arrays_have_the_documented_shapes(obama_dataset: Path):
    import soundfile as sf

    d = obama_dataset
    assert np.load(d / "landmarks.npy").shape == (N, 478, 3)
    assert np.load(d / "canonical.npy").shape == (N, 478, 3)
    assert np.load(d / "neutral.npy").shape == (478, 3)
    assert np.load(d / "expression.npy").shape == (N, EXPRESSION_DIM)
    assert np.load(d / "head_boxes.npy").shape == (N, 4)
    assert np.load(d / "interpolated.npy").dtype == bool
    pose = np.load(d / "pose.npz")
    assert pose["pose"].shape == (N, 3, 4) and pose["euler_deg"].shape == (N, 3)
    audio, sr = sf.read(d / "audio.wav")
    assert sr == SAMPLE_RATE and audio.ndim == 1 and len(audio) == N * 640
    assert np.load(d / "mel.npy").shape == (N * 4, 80)


def test_pose_maps_canonical_to_pixels_in_the_documented_frame(obama_dataset: Path):
    d = obama_dataset
    lm = np.load(d / "landmarks.npy")
    can = np.load(d / "canonical.npy")
    neutral = np.load(d / "neutral.npy")
    P = np.load(d / "pose.npz")["pose"]
    assert np.allclose(np.einsum("nij,nkj->nki", P[:, :, :3], can) + P[:, None, :, 3], lm, atol=0.05)
    assert face_height(neutral) == pytest.approx(1.0, abs=1e-4)  # unit: neutral face height
    assert np.abs(neutral[list(RIGID_POINTS)].mean(axis=0)).max() < 0.02  # origin near the rigid centroid
    assert neutral[263, 0] > neutral[33, 0] and neutral[152, 1] > neutral[10, 1]  # x right, y down
    assert neutral[NOSE_TIP, 2] < neutral[234, 2]  # z away from the camera: the nose is nearer than the cheek
    # The rigid points barely move in canonical space while the mouth does: jaw motion is not in the pose.
    rigid_spread = can[:, list(RIGID_POINTS)].std(axis=0).mean()
    lip_gap = np.linalg.norm(can[:, 13] - can[:, 14], axis=-1)
    assert rigid_spread < 0.01 and lip_gap.std() > 2 * rigid_spread


def test_pose_is_stable_on_the_stillest_stretch(obama_dataset: Path):
    jit = json.loads((obama_dataset / "dataset.json").read_text())["stats"]["pose"]
    raw, smooth = jit["jitter_raw"], jit["jitter_smoothed"]
    assert smooth["rotation_deg_noise"] < 0.2 and smooth["translation_mm_noise"] < 0.2
    assert smooth["rotation_deg_noise"] < raw["rotation_deg_noise"]


def test_pose_does_not_absorb_mouth_opening(obama_dataset: Path):
    expr = np.load(obama_dataset / "expression.npy")
    euler = np.load(obama_dataset / "pose.npz")["euler_deg"]
    mo = mouth_opening(expr)
    X = np.column_stack([euler, np.ones(len(euler))])
    resid = mo - X @ np.linalg.lstsq(X, mo, rcond=None)[0]
    r2 = 1 - resid.var() / mo.var()
    assert r2 < 0.3, f"head pose explains {r2:.0%} of mouth-opening variance"
    assert mo.max() > 0.3 and mo.min() >= 0  # the mouth opens and closes in 7 s of speech


def test_masks_boxes_and_crop_agree_with_landmarks(obama_dataset: Path):
    import cv2

    d = obama_dataset
    m = json.loads((d / "dataset.json").read_text())
    lm = np.load(d / "landmarks.npy")
    boxes = np.load(d / "head_boxes.npy")
    c = m["crop"]
    assert c["x1"] - c["x0"] == c["y1"] - c["y0"] == c["size"]
    assert (boxes[:, 0] >= c["x0"]).all() and (boxes[:, 2] <= c["x1"]).all()
    assert (boxes[:, 1] >= c["y0"]).all() and (boxes[:, 3] <= c["y1"]).all()
    for i in (0, N // 2, N - 1):
        mask = cv2.imread(str(d / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (450, 450) and set(np.unique(mask)) <= {0, 1, 2}
        nose = np.round(lm[i, NOSE_TIP, :2]).astype(int)
        assert mask[nose[1], nose[0]] == 2  # head
        assert mask[445, 225] == 1  # bottom centre: the suit, torso
        assert mask[20, 20] == 0  # top-left: window, background
        x0, y0, x1, y1 = boxes[i]
        assert x0 <= lm[i, :, 0].min() and lm[i, :, 0].max() <= x1 and y0 <= lm[i, :, 1].min()


def test_background_plate_is_clean_where_the_person_never_is(obama_dataset: Path):
    import cv2

    d = obama_dataset
    plate = cv2.imread(str(d / "background.png"))
    frame = cv2.imread(str(d / "frames" / "000000.jpg"))
    m = json.loads((d / "dataset.json").read_text())
    assert plate.shape == frame.shape
    corner = (slice(0, 60), slice(0, 60))  # window behind the speaker, never covered
    assert np.abs(plate[corner].astype(int) - frame[corner].astype(int)).mean() < 6
    assert not m["stats"]["background"]["moving_camera_suspected"]


def test_cli_prepares_a_30fps_driver_with_separate_audio_and_preview(driver_clip, tmp_path: Path, capsys):
    import cv2

    from ideal.cli import main

    out = tmp_path / "driver"
    code = main(["-q", "prepare", str(driver_clip), "--audio", str(driver_clip.with_suffix(".wav")),
                 "-o", str(out), "--start", "3", "--duration", "6", "--preview", "--no-av-offset"])
    assert code == 0
    m = load_dataset_manifest(out)
    assert m.fps == 25.0 and m.source.source_fps == pytest.approx(30.0) and m.n_frames == 150
    assert m.audio.source.endswith("driver_30fps.wav") and m.audio.n_samples == 150 * 640
    sheet = cv2.imread(str(out / "preview" / "preview_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 200
    assert (out / "preview" / "preview.mp4").stat().st_size > 10_000
    assert "faces detected on" in capsys.readouterr().out
