"""Compositing the head crop over the base plate, the base plate's storage, and the synthetic mark."""

from __future__ import annotations

import numpy as np

from ideal.avatar.compose import (BasePlate, add_synthetic_mark, base_image, base_region, composite, composite_over,
                            feather_mask)


def _frames(n: int, h: int = 64, w: int = 80):
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = np.full((h, w, 3), 40 + 10 * i, np.uint8)
        labels = np.zeros((h, w), np.uint8)
        labels[40:, 10:70] = 1  # torso
        labels[10:40, 25:55] = 2  # head, touching the torso at row 40
        rgb[labels == 2] = rng.integers(0, 255, 3)
        yield rgb, labels


def test_base_region_is_torso_plus_a_thin_neck_band():
    _, labels = next(_frames(1))
    region = base_region(labels)
    assert region[labels == 1].all()
    assert region[39, 30] and not region[20, 30] and not region[5, 5]


def test_base_image_stretches_the_neck_into_the_head_hole_not_the_background():
    """Where the rendered chin ends a little above this frame's head mask, the base must show neck, not a line of
    the background plate (the seam seen under the built-in avatar's chin in ~1 frame in 10)."""
    h, w = 200, 200
    labels = np.zeros((h, w), np.uint8)
    labels[150:, 10:190] = 1  # torso (shoulders)
    labels[60:150, 85:115] = 2  # head down to the neck, which meets the torso at row 150
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[labels == 1] = (0, 0, 255)
    rgb[labels == 2] = (180, 120, 90)  # skin
    background = np.full((h, w, 3), (0, 200, 0), np.uint8)
    image, taken = base_image(rgb, labels, background)
    band = base_region(labels)
    top = int(np.argmax(band[:, 100]))  # first base row of a neck column
    k = 6  # NECK_EXTENSION_FRACTION of 200 px
    assert top < 150 and taken[top - k:top, 100].all()
    assert (image[top - k:top, 100] == rgb[top, 100]).all()  # neck colour above the neck band
    assert (image[top - k - 2, 100] == background[0, 0]).all()  # no further: the head hole stays plate
    assert (image[140:150, 50] == background[0, 0]).all() and not taken[140:150, 50].any()  # beside the neck
    assert taken[band].all()  # everything base_region takes is still taken


def test_base_plate_round_trip(tmp_path):
    bg = np.full((64, 80, 3), 200, np.uint8)
    plate = BasePlate.build(bg, _frames(3), 3, quality=95)
    plate.save(tmp_path / "base_plate.npz")
    back = BasePlate.load(tmp_path / "base_plate.npz")
    assert back.n_frames == 3 and back.size == (64, 80)
    for i, (rgb, _) in enumerate(_frames(3)):
        f = back.frame(i)
        assert f.shape == (64, 80, 3) and f.dtype == np.uint8
        assert np.abs(f[50, 40].astype(int) - rgb[50, 40]).max() <= 3  # torso from the frame
        assert (f[20, 40] == 200).all() and (f[5, 5] == 200).all()  # head region and background from the plate
    assert (back.frame(4) == back.frame(1)).all()  # the track loops


def test_composite_blends_inside_the_crop_and_feathers_its_border():
    base = np.full((100, 120, 3), 50, np.uint8)
    s = 32
    rgb = np.ones((s, s, 3), np.float32)
    alpha = np.ones((s, s, 1), np.float32)
    out = composite_over(rgb, alpha, base, (20.0, 10.0, 64.0))
    assert out.shape == base.shape and out.dtype == np.uint8
    assert (out[42, 52] == 255).all()  # centre of the crop: the head
    assert (out[5, 5] == 50).all() and (out[90, 110] == 50).all()  # outside the crop: untouched
    assert out[10, 52, 0] < 100  # crop border row: feathered to the base, no hard edge
    row = out[42, 20:40, 0].astype(int)
    assert (np.diff(row) >= 0).all()  # a monotone ramp into the crop
    empty = composite_over(rgb, np.zeros((s, s, 1), np.float32), base, (20.0, 10.0, 64.0))
    assert (empty == base).all()
    m = feather_mask(64)
    assert m.shape == (64, 64, 1) and m[32, 32, 0] == 1 and m[0, 32, 0] < 0.2 and m[0, 0, 0] < m[0, 32, 0]


def test_composite_with_a_base_plate_and_partial_crop():
    bg = np.full((64, 80, 3), 200, np.uint8)
    plate = BasePlate.build(bg, _frames(2), 2)
    rgb = np.zeros((16, 16, 3), np.float32)
    alpha = np.ones((16, 16, 1), np.float32)
    out = composite(rgb, alpha, plate, (60.0, 30.0, 40.0), frame_index=1)  # crop runs off the frame
    assert out.shape == (64, 80, 3)
    assert out[50, 75].max() < 60  # inside the visible part of the crop: the (black) head


def test_synthetic_mark_is_visible_and_local():
    frame = np.full((256, 256, 3), 128, np.uint8)
    marked = add_synthetic_mark(frame)
    diff = np.abs(marked.astype(int) - frame).sum(-1) > 0
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 200  # visible
    assert ys.min() > 256 * 0.75 and xs.min() > 256 * 0.5  # bottom-right corner only
    assert (frame == 128).all()  # the input is not modified
    assert (marked[diff] > 200).any() and (marked[diff] < 100).any()  # white text on a dark box


def test_channel_first_views_composite_exactly_like_contiguous_crops():
    """Exported backends hand over channel-last views of channel-first buffers (no copy on the model thread);
    compositing them plane by plane must give the same frame, for a downscale, an upscale and no resize."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (120, 140, 3)).astype(np.uint8)
    for size, side in ((64, 56), (48, 56), (56, 56)):
        rgb_cf = rng.random((1, 3, size, size), dtype=np.float32)
        alpha_cf = rng.random((1, 1, size, size), dtype=np.float32)
        before = rgb_cf.copy(), alpha_cf.copy()
        rgb_view, alpha_view = rgb_cf.transpose(0, 2, 3, 1)[0], alpha_cf.transpose(0, 2, 3, 1)[0]
        assert not rgb_view.flags.c_contiguous
        crop = (30.0, 20.0, float(side))
        planar = composite_over(rgb_view, alpha_view, base, crop)
        packed = composite_over(np.ascontiguousarray(rgb_view), np.ascontiguousarray(alpha_view), base, crop)
        assert np.array_equal(planar, packed), (size, side, np.abs(planar.astype(int) - packed).max())
        # the backend's buffers are read, never written
        assert np.array_equal(rgb_cf, before[0]) and np.array_equal(alpha_cf, before[1])
