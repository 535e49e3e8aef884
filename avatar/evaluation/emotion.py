"""How the avatar's audio-driven brows and eyes react to emotion in the voice: Cohen's d per field between
two recordings of the same speaker (e.g. MEAD m030 neutral vs angry).

`python -m avatar.evaluation.emotion --avatar DIR NEUTRAL.m4a ANGRY.m4a [--renders OUT_DIR]`

Only voiced frames count (silence says nothing about emotion and would dilute both means). d uses the pooled
standard deviation; |d| of 0.2 / 0.5 / 0.8 are the usual small / medium / large.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ideal.avatar.expression import SLICES

log = logging.getLogger(__name__)

FIELDS_REPORTED = SLICES["brows"].fields + SLICES["eyes"].fields


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean(b) - mean(a)) / pooled sd of two samples; NaN when both are constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / max(na + nb - 2, 1))
    if pooled < 1e-12:
        return float("nan")
    return float((b.mean() - a.mean()) / pooled)


def predicted_upper(avatar, audio_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prosody predictor's expressions (N, 20) for a whole recording and a voiced mask (N,)."""
    from ideal.avatar.audio.features import compute_features, windows_for_frames
    from ideal.avatar.clock import FrameClock
    from ideal.avatar.mouth.gate import GateConfig, frame_levels_db, noise_floor_db

    fps = float(avatar.fps)
    n = FrameClock(fps).frames_for_samples(len(audio_16k))
    mel = compute_features(audio_16k, avatar.mel_config)
    pred = avatar.prosody_predictor.predict_expression(
        windows_for_frames(mel, n, fps, avatar.prosody_predictor.window, avatar.mel_config))
    levels = frame_levels_db(audio_16k, fps)[:n]
    gate = GateConfig()  # voiced as the silence gate judges a frame, against the whole clip's noise floor
    voiced = levels > max(gate.abs_floor_db, noise_floor_db(audio_16k, fps) + gate.above_noise_db)
    return pred, voiced


def emotion_effect(avatar, neutral_16k: np.ndarray, emotional_16k: np.ndarray) -> dict:
    """{field: {"d", "mean_neutral", "mean_emotional"}} over voiced frames of each recording."""
    pn, vn = predicted_upper(avatar, neutral_16k)
    pe, ve = predicted_upper(avatar, emotional_16k)
    out = {}
    for f in FIELDS_REPORTED:
        from ideal.avatar.expression import FIELDS

        j = FIELDS.index(f)
        a, b = pn[vn, j], pe[ve, j]
        out[f] = {"d": cohens_d(a, b), "mean_neutral": float(a.mean()), "mean_emotional": float(b.mean()),
                  "n_neutral": int(len(a)), "n_emotional": int(len(b))}
    return out


def main(argv: list[str] | None = None) -> int:
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.loading import load_avatar

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", required=True, type=Path)
    p.add_argument("neutral", type=Path)
    p.add_argument("emotional", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    avatar = load_avatar(args.avatar)
    res = emotion_effect(avatar, load_audio(args.neutral), load_audio(args.emotional))
    print(f"| field | mean {args.neutral.stem} | mean {args.emotional.stem} | Cohen's d |")
    print("| --- | --- | --- | --- |")
    for f, r in res.items():
        print(f"| {f} | {r['mean_neutral']:.3f} | {r['mean_emotional']:.3f} | {r['d']:+.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"avatar": str(args.avatar), "neutral": str(args.neutral),
                                         "emotional": str(args.emotional), "fields": res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
