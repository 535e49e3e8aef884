"""Fitting the avatar's brows/eyes-from-prosody predictor on its own footage (closed form, seconds)."""

from __future__ import annotations

import numpy as np

from ideal.avatar.audio.features import windows_for_frames
from ideal.avatar.evaluation.face_metrics import pearson
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
        field_r = pearson(a, b)
        r[f] = round(field_r, 3) if np.isfinite(field_r) else 0.0  # a constant field: no correlation
    return pred, {"held_out_r": r}
