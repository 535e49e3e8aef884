"""The expression-vector contract on real tracked-like geometry."""

from __future__ import annotations

import numpy as np

from ideal.avatar import expression as ex


def _face() -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = rng.normal(0, 0.2, (ex.N_LANDMARKS, 3)).astype(np.float32)
    lm[ex.FOREHEAD] = [0, -0.5, 0]
    lm[ex.CHIN] = [0, 0.5, 0]
    lm[ex.UPPER_LIP_INNER] = [0, 0.25, -0.1]
    lm[ex.LOWER_LIP_INNER] = [0, 0.25, -0.1]
    return lm


def test_layout_is_contiguous_and_named():
    assert ex.EXPRESSION_DIM == len(ex.FIELDS) == 20
    starts = sorted((s.start, s.stop) for s in ex.SLICES.values())
    assert starts[0][0] == 0 and all(a[1] == b[0] for a, b in zip(starts, starts[1:]))
    assert ex.FIELDS[ex.MOUTH_OPEN_INDEX] == "mouth_open"


def test_neutral_is_zero_and_mouth_opening_absolute():
    neutral = _face()
    assert np.allclose(ex.expression_from_landmarks(neutral[None], neutral), 0, atol=1e-6)
    opened = neutral.copy()
    opened[ex.LOWER_LIP_INNER, 1] += 0.05
    e = ex.expression_from_landmarks(opened[None], neutral)[0]
    assert np.isclose(ex.mouth_opening(e), 0.05 * ex.FEATURE_SCALE, atol=1e-5)
    # only mouth fields move when only a lip moves
    assert np.allclose(ex.select(e, "brows", "eyes", "gaze"), 0, atol=1e-6)


def test_replace_takes_named_slices():
    a, b = np.zeros((3, 20), np.float32), np.ones((3, 20), np.float32)
    out = ex.replace(a, b, "mouth")
    assert out[:, ex.SLICES["mouth"].indices].all() and not out[:, ex.SLICES["brows"].indices].any()
