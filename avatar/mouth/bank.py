"""Precomputed (and cached) features of every clip and its augmented variants, ready for window sampling.

A `Sequence` is one variant of one clip: its feature frames at 100 Hz and its labels re-timed to match
(speed perturbation changes the duration). Features of augmented audio are the expensive part of training,
so they are cached as npz keyed by clip hash, feature spec and augmentation parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ideal.avatar.progress import progress_bar

from ideal.avatar.mouth import augmentation as aug
from ideal.avatar.mouth.data import MouthClip, default_cache_dir
from ideal.avatar.mouth.features import FeatureSpec, compute_mouth_features

log = logging.getLogger(__name__)


@dataclass
class Sequence:
    clip: int  # index into the clip list
    variant: int  # 0 = clean
    speed: float
    features: np.ndarray  # (T, D) at 100 Hz
    mouth: np.ndarray  # (N', 10) labels on this variant's time base
    valid: np.ndarray  # (N',) bool
    fps: float


def build_bank(clips: list[MouthClip], spec: FeatureSpec, cfg: aug.AugmentConfig, seed: int = 0,
               cache_dir: Path | None = None, progress: bool = True) -> list[Sequence]:
    """Clean + cfg.n_variants augmented Sequences per clip (features cached)."""
    cache_dir = (cache_dir or default_cache_dir()) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    seqs: list[Sequence] = []
    jobs = [(ci, v) for ci in range(len(clips)) for v in range(cfg.n_variants + 1)]
    for ci, v in progress_bar(jobs, desc=f"features ({spec.kind})", disable=not progress, leave=False):
        clip = clips[ci]
        rng = np.random.default_rng([seed, v, int(clip.key[:8], 16)])
        params = None if v == 0 else aug.draw_params(rng, cfg)
        speed = 1.0 if params is None else params.speed
        tag = json.dumps({"clip": clip.key, "spec": spec.to_dict(), "params": asdict(params) if params else None,
                          "seed": seed, "v": v}, sort_keys=True)
        path = cache_dir / f"{clip.name}-{hashlib.sha1(tag.encode()).hexdigest()[:16]}.npy"
        if path.exists():
            feats = np.load(path)
        else:
            audio = clip.audio if params is None else aug.apply(clip.audio, params, rng)
            feats = compute_mouth_features(audio, spec).astype(np.float16)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, feats)
            os.replace(tmp, path)
        mouth = aug.retime_labels(clip.mouth, speed)
        valid = aug.retime_labels(clip.valid.astype(np.float32), speed) > 0.99
        seqs.append(Sequence(ci, v, speed, feats.astype(np.float32), mouth, valid, clip.fps))
    return seqs
