"""Running a mouth model over audio: per video frame (for dub / evaluation) or per 10 ms hop (offset search).

Window placement follows avatar.audio.features.window_for_frame exactly (the window of video frame i ends
`lookahead_ms` after the frame ends); `gather_windows` is its vectorised form, padded with silence.
"""

from __future__ import annotations

import numpy as np

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.mouth.features import FeatureSpec, compute_mouth_features, padding_value


def frame_end_indices(n_frames: int, fps: float, window: AudioWindow, spec: FeatureSpec,
                      offset_ms: float = 0.0) -> np.ndarray:
    """Exclusive feature index where each video frame's window ends, (n_frames,) int64.

    offset_ms > 0 means the audio is late against the video: frame i's sound sits offset_ms further on."""
    fps_feat = spec.mel.frames_per_second
    ends = np.rint((np.arange(n_frames) + 1) / fps * fps_feat).astype(np.int64)
    return ends + window.lookahead_frames(spec.mel) + int(round(offset_ms * fps_feat / 1000.0))


def gather_windows(features: np.ndarray, ends: np.ndarray, length: int, pad: float) -> np.ndarray:
    """features (T, D), ends (B,) exclusive end indices -> (B, length, D), out-of-range rows = pad."""
    t, d = features.shape
    padded = np.concatenate([np.full((length, d), pad, np.float32), features.astype(np.float32),
                             np.full((length, d), pad, np.float32)])
    # feature j sits at padded row j + length, so the window [end - length, end) is rows [end, end + length)
    idx = np.clip(ends, 0, t + length)[:, None] + np.arange(length)[None, :]
    return padded[idx]


def predict_frames(model, audio_16k: np.ndarray, n_frames: int, fps: float, offset_ms: float = 0.0,
                   features: np.ndarray | None = None) -> np.ndarray:
    """Mouth slices for video frames 0..n_frames-1 of a clip: (n_frames, 10)."""
    feats = compute_mouth_features(audio_16k, model.spec) if features is None else features
    ends = frame_end_indices(n_frames, fps, model.window, model.spec, offset_ms)
    return model.predict(gather_windows(feats, ends, model.window.length, padding_value(model.spec)))


def predict_dense(model, audio_16k: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """Mouth opening for a window ending at every feature hop k (exclusive end k+1): (T,) at 100 Hz.

    Entry k is what the model says for a video frame whose window ends at feature index k+1."""
    feats = compute_mouth_features(audio_16k, model.spec) if features is None else features
    ends = np.arange(1, len(feats) + 1)
    return model.predict(gather_windows(feats, ends, model.window.length, padding_value(model.spec)))[:, 0]
