"""Fitting the avatar's brows/eyes-from-prosody predictor on its own footage (closed form, seconds)."""

from __future__ import annotations

import numpy as np

from ideal.avatar.audio.features import windows_for_frames
from ideal.avatar.expression import SLICES
from ideal.avatar.model.components.prosody import PREDICTED_SLICES, ProsodyExpressionPredictor
from ideal.avatar.training.data import TrainingData


def fit_prosody(data: TrainingData) -> tuple[ProsodyExpressionPredictor, dict]:
    """-> the fitted predictor and its held-out Pearson r per predicted field (the honest figure: small)."""
    pred = ProsodyExpressionPredictor()
    fps = data.manifest.fps
    windows = windows_for_frames(data.mel, data.n_frames, fps, pred.window, data.mel_config)
    pred.fit(windows[data.train_idx], data.expression[data.train_idx])
    out = pred.predict_expression(windows[data.val_idx])
    fields = [f for s in PREDICTED_SLICES for f in SLICES[s].fields]
    cols = [i for s in PREDICTED_SLICES for i in range(SLICES[s].start, SLICES[s].stop)]
    r = {}
    for f, c in zip(fields, cols):
        a, b = out[:, c], data.expression[data.val_idx, c]
        r[f] = round(float(np.corrcoef(a, b)[0, 1]), 3) if a.std() > 1e-8 and b.std() > 1e-8 else 0.0
    return pred, {"held_out_r": r}
