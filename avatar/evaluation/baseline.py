"""The trivial baseline every figure is compared with: the nearest training frame by audio feature.

For each held-out frame, the training frame whose audio window (the same causal log-mel window the avatar is
conditioned on) is closest in Euclidean distance is shown as it is: a real photograph, so its image quality
is perfect, but its mouth, expression and head pose belong to another moment. A method that does not beat it
has learnt nothing from the audio or the expression.
"""

from __future__ import annotations

import numpy as np


def nearest_by_audio(train_windows: np.ndarray, query_windows: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Index into `train_windows` of the nearest window for each query.

    train_windows: (T, W, D) float; query_windows: (Q, W, D) float -> (Q,) int64.
    """
    tr = np.asarray(train_windows, np.float32).reshape(len(train_windows), -1)
    q = np.asarray(query_windows, np.float32).reshape(len(query_windows), -1)
    if tr.shape[1] != q.shape[1]:
        raise ValueError(f"window sizes differ: {train_windows.shape[1:]} vs {query_windows.shape[1:]}")
    tr_sq = (tr * tr).sum(axis=1)
    out = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        block = q[s:s + chunk]
        d = tr_sq[None, :] - 2.0 * block @ tr.T  # |q|^2 is constant per row: irrelevant to the argmin
        out[s:s + chunk] = np.argmin(d, axis=1)
    return out
