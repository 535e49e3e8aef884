"""Evaluation metrics on known inputs (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ideal.avatar.evaluation.face_metrics import (AU_PROXIES, FACE_POINTS, MOUTH_POINTS, TrackedFrames, au_values,
                                            face_metrics, lmd, lmdv, pose_angle_deg)
from ideal.avatar.evaluation.image_metrics import PSNR_CAP_DB, crop, l1, psnr, ssim
from ideal.avatar.expression import EXPRESSION_DIM, FIELDS


def _image(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth structure (gradients + blobs), like a face crop, not white noise
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, 0.5 + 0.3 * np.sin(6 * x) * np.cos(5 * y)], axis=-1)
    return np.clip(base + 0.05 * rng.standard_normal((size, size, 3)), 0, 1)


def test_identical_images_are_perfect():
    img = _image()
    assert l1(img, img) == 0.0
    assert psnr(img, img) == PSNR_CAP_DB
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-9)


def test_psnr_of_known_noise():
    img = _image()
    rng = np.random.default_rng(1)
    sigma = 0.05
    noisy = img + sigma * rng.standard_normal(img.shape)  # no clipping: the MSE is sigma^2 exactly in expectation
    expected = -10 * np.log10(sigma ** 2)  # 26.02 dB
    assert psnr(img, noisy) == pytest.approx(expected, abs=0.15)
    assert l1(img, noisy) == pytest.approx(sigma * np.sqrt(2 / np.pi), rel=0.03)


def test_ssim_falls_with_noise_and_loss_of_structure():
    img = _image()
    rng = np.random.default_rng(2)
    s_small = ssim(img, np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1))
    s_big = ssim(img, np.clip(img + 0.2 * rng.standard_normal(img.shape), 0, 1))
    assert 1.0 > s_small > s_big > 0.0
    # the same pixels in a random order keep the histogram but lose all structure
    shuffled = rng.permutation(img.reshape(-1, 3)).reshape(img.shape)
    assert ssim(img, shuffled) < 0.2
    u8 = (img * 255).round().astype(np.uint8)
    assert ssim(u8, u8) == pytest.approx(1.0)
    assert psnr(u8, u8.astype(np.float64) / 255.0) == PSNR_CAP_DB


def test_ssim_matches_reference_formula_on_constant_shift():
    # for constant images a, b: SSIM = (2ab + c1) / (a^2 + b^2 + c1) (the structure terms are all 1)
    a, b = np.full((32, 32), 0.4), np.full((32, 32), 0.6)
    c1 = 0.01 ** 2
    assert ssim(a, b) == pytest.approx((2 * 0.4 * 0.6 + c1) / (0.4 ** 2 + 0.6 ** 2 + c1), rel=1e-9)


def test_shape_mismatch_and_empty_crop_raise():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        crop(np.zeros((10, 10, 3)), (20, 20, 30, 30))
    assert crop(np.zeros((10, 10, 3)), (-5, 2, 4, 12)).shape == (8, 4, 3)


def _landmarks(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(100, 400, size=(n, 478, 3))


def test_lmd_of_shifted_landmarks():
    real = _landmarks()
    fake = real.copy()
    fake[..., 0] += 3.0
    fake[..., 1] -= 4.0  # a (3, -4) shift: 5 px everywhere
    fake[..., 2] += 50.0  # depth is not part of LMD
    assert np.allclose(lmd(real, fake), 5.0)
    assert np.allclose(lmd(real, fake, MOUTH_POINTS, scale=512 / 450), 5.0 * 512 / 450)
    # shifting only the mouth moves mouth LMD by the full amount and whole-face LMD by its share
    fake2 = real.copy()
    fake2[:, MOUTH_POINTS, 0] += 2.0
    assert np.allclose(lmd(real, fake2, MOUTH_POINTS), 2.0)
    assert np.allclose(lmd(real, fake2, FACE_POINTS), 2.0 * len(MOUTH_POINTS) / len(FACE_POINTS))


def test_lmdv_ignores_constant_offset_and_non_consecutive_pairs():
    real = _landmarks(5)
    fake = real + np.array([7.0, -2.0, 0.0])  # constant offset: zero velocity error
    consecutive = np.array([True, True, False, True])
    v = lmdv(real, fake, consecutive)
    assert v.shape == (3,) and np.allclose(v, 0.0)
    fake2 = real.copy()
    fake2[2, :, 0] += 1.0  # a one-frame 1 px jump: pairs (1,2) and (2,3) each off by 1 px
    v2 = lmdv(real, fake2, np.ones(4, bool))
    assert np.allclose(v2, [0.0, 1.0, 1.0, 0.0])


def _pose(yaw_deg: float, scale: float = 200.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return np.concatenate([scale * r, np.array([[250.0], [240.0], [0.0]])], axis=1)


def test_pose_angle_of_known_rotations_is_scale_free():
    real = np.stack([_pose(0), _pose(10), _pose(-5)])
    fake = np.stack([_pose(0, 150), _pose(13, 260), _pose(-5, 90)])
    assert np.allclose(pose_angle_deg(real, fake), [0.0, 3.0, 0.0], atol=1e-6)


def test_au_proxies_read_their_fields():
    e = np.zeros((1, EXPRESSION_DIM))
    e[0, FIELDS.index("jaw_drop")] = 2.0
    e[0, FIELDS.index("eye_open_r")] = -1.0
    e[0, FIELDS.index("eye_open_l")] = -3.0
    au = dict(zip([a.name for a in AU_PROXIES], au_values(e)[0]))
    assert au["jaw_drop"] == 2.0 and au["blink"] == 2.0 and au["brow_raise"] == 0.0


def test_face_metrics_skips_untracked_frames_and_reports_detection_rate():
    real_lm = _landmarks(4)
    fake_lm = real_lm.copy()
    fake_lm[..., 0] += 1.0
    fake_lm[1, ..., 0] += 100.0  # this frame's face was "not found": must not count
    expr_r = np.zeros((4, EXPRESSION_DIM))
    expr_f = expr_r.copy()
    expr_f[:, FIELDS.index("mouth_open")] = 0.9
    poses = np.stack([_pose(0)] * 4)
    real = TrackedFrames(real_lm, poses, expr_r, np.ones(4, bool))
    fake = TrackedFrames(fake_lm, np.stack([_pose(2)] * 4), expr_f, np.array([True, False, True, True]))
    m = face_metrics(real, fake, frame_index=np.array([10, 11, 12, 13]))
    assert m["face_found"] == 0.75
    assert m["lmd"] == pytest.approx(1.0) and m["lmd_mouth"] == pytest.approx(1.0)
    assert m["lmdv"] == pytest.approx(0.0)  # only (12, 13) is a consecutive tracked pair
    assert m["au_lips_part"] == pytest.approx(0.9)
    assert m["au_error"] == pytest.approx(0.9 / len(AU_PROXIES))
    assert m["pose_d"] == pytest.approx(2.0)


def test_baseline_picks_the_nearest_audio_window():
    from ideal.avatar.evaluation.baseline import nearest_by_audio

    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 16, 80)).astype(np.float32)
    picks = np.array([3, 17, 17, 42])
    query = train[picks] + 0.01 * rng.normal(size=(4, 16, 80)).astype(np.float32)
    assert list(nearest_by_audio(train, query, chunk=3)) == list(picks)


def test_cohens_d_of_known_samples():
    from ideal.avatar.evaluation.emotion import cohens_d

    a = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    b = a + 1.58113883  # shift by one pooled sd (sd of a = 1.5811)
    assert cohens_d(a, b) == pytest.approx(1.0, rel=1e-6)
    assert cohens_d(b, a) == pytest.approx(-1.0, rel=1e-6)
    assert np.isnan(cohens_d(np.ones(4), np.ones(4)))


def test_head_box_maps_into_the_render_crop():
    from ideal.avatar.compose import box_in_render_crop
    from ideal.avatar.evaluation.image_metrics import head_crop_metrics

    # obama: the crop is the whole 450 px frame, rendered at 512
    assert box_in_render_crop(np.array([105, 26, 367, 381]), (0, 0, 450), 512) == (119, 29, 418, 434)
    # a crop offset into the frame, box partly outside the crop: clipped
    assert box_in_render_crop(np.array([40, 60, 300, 400]), (50, 50, 300), 300) == (0, 10, 250, 300)
    real = _image(3, 64)
    fake = real.copy()
    fake[:, :16] = 0.0  # damage outside the head box only
    m = head_crop_metrics(real, fake, (20, 10, 60, 60))
    assert m["psnr"] == PSNR_CAP_DB and m["l1"] == 0.0
