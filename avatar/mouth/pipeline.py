"""End-to-end retraining: videos in, a mouth model directory out (what `ideal mouth train` runs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ideal.avatar.errors import IdealError, InputError
from ideal.avatar.evaluation.face_metrics import pearson
from ideal.avatar.manifest import atomic_output_dir
from ideal.avatar.mouth.bank import build_bank
from ideal.avatar.mouth.data import MouthClip, find_clips, load_clip
from ideal.avatar.mouth.config import PipelineConfig
from ideal.avatar.mouth.model import MouthModel, save_mouth_model
from ideal.avatar.mouth.training import bootstrap_offsets, leave_one_speaker_out, predict_sequence, train_mouth_net

log = logging.getLogger(__name__)

def load_clips(inputs: list[str | Path], cache_dir: Path | None = None) -> list[MouthClip]:
    """Track every clip (cached); a bad clip is skipped with a warning, none usable is an error."""
    from ideal.avatar.progress import progress_bar

    clips, errors = [], []
    for video, audio in progress_bar(find_clips(inputs), desc="clips", unit="clip"):
        try:
            clips.append(load_clip(video, audio, cache_dir=cache_dir))
        except IdealError as exc:
            log.warning("skipping %s: %s", video, exc)
            errors.append(str(exc))
    if not clips:
        raise InputError("none of the clips is usable: " + "; ".join(errors),
                         "pass talking-head videos with speech (or video + same-name .wav)")
    return clips


def read_offsets(path: Path) -> dict[str, float]:
    """Clip name -> A/V offset (ms) from a json map, a benchmark offsets.json or a mouth model's mouth.json."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable offsets file ({exc})",
                         "pass a json {clip name: ms} or a mouth.json") from exc
    if "training_data" in data:
        return {d["name"]: float(d["av_offset_ms"]) for d in data["training_data"]}
    data = data.get("offsets_ms", data)
    try:
        return {str(k): float(v) for k, v in data.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: not a map of clip names to milliseconds", "e.g. {\"obama_20s\": 160}") from exc


def clip_offsets(clips: list[MouthClip], seqs, cfg: PipelineConfig,
                 known: dict[str, float] | None = None) -> tuple[dict[int, float], str, list]:
    """A/V offset of every training clip: given ones first; else the bootstrap when there are >= 2
    speakers, else the shipped model's (or the energy envelope's) estimate."""
    if known is not None:
        missing = [c.name for c in clips if c.name not in known]
        if not missing:
            return {i: known[c.name] for i, c in enumerate(clips)}, "given", []
        log.warning("no known offset for %s: estimating all clips", ", ".join(missing))
    if len({c.speaker for c in clips}) >= 2 and cfg.bootstrap_rounds > 0:
        offsets, history = bootstrap_offsets(seqs, clips, cfg.spec, cfg.window, cfg.train, cfg.net,
                                             cfg.bootstrap_rounds)
        return offsets, "bootstrap", history
    from ideal.avatar.mouth.offset import estimate_offset

    offsets, methods = {}, set()
    for i, c in enumerate(clips):
        est = estimate_offset(c.audio, c.mouth_open, c.fps, valid=c.valid)
        offsets[i] = est.offset_ms
        methods.add(est.method)
    return offsets, "+".join(sorted(methods)), []


def train_from_clips(clips: list[MouthClip], out_dir: Path, cfg: PipelineConfig | None = None,
                     overwrite: bool = False, cache_dir: Path | None = None,
                     known_offsets: dict[str, float] | None = None) -> dict:
    """Bootstrap offsets, optionally measure LOSO, train on everything and write the model dir."""
    cfg = cfg or PipelineConfig()
    if sum(len(c.mouth) for c in clips) < cfg.train.batch_size:
        raise InputError(f"only {sum(len(c.mouth) for c in clips)} frames of training video",
                         "pass at least a few seconds of talking-head video")
    seqs = build_bank(clips, cfg.spec, cfg.augment, cache_dir=cache_dir)
    offsets, offset_method, history = clip_offsets(clips, seqs, cfg, known_offsets)
    for i, c in enumerate(clips):
        level = logging.WARNING if abs(offsets[i]) > 80 else logging.INFO
        log.log(level, "%s: A/V offset %+.0f ms (%s)", c.name, offsets[i], offset_method)
    metrics: dict = {}
    if cfg.loso and len({c.speaker for c in clips}) >= 2:
        loso = leave_one_speaker_out(seqs, clips, cfg.spec, cfg.window, cfg.train, cfg.net, offsets)
        per_speaker = {spk: round(r, 3) for spk, r in loso.per_speaker.items()}
        metrics["loso_mouth_open_r"] = {"per_speaker": per_speaker,
                                        "mean": round(float(np.mean(list(per_speaker.values()))), 3)}
    module = train_mouth_net(seqs, cfg.spec, cfg.window, cfg.train, cfg.net, offsets)
    model = MouthModel(cfg.window, cfg.spec, module)
    metrics["train_mouth_open_r"] = {c.name: round(pearson(predict_sequence(model, s, offsets[s.clip])[s.valid, 0],
                                                           s.mouth[s.valid, 0]), 3)
                                     for s in seqs if s.variant == 0 for c in [clips[s.clip]]}
    extra = {
        "training_data": [{"name": c.name, "speaker": c.speaker, "sha256_16": c.key, "frames": len(c.mouth),
                           "fps": c.fps, "av_offset_ms": round(offsets[i], 1)} for i, c in enumerate(clips)],
        "av_offset_method": offset_method,
        "av_offset_history": history,
        "train_config": cfg.train.to_dict(),
        "augment": cfg.augment.to_dict(),
        "metrics": metrics,
    }
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        save_mouth_model(tmp, module, cfg.spec, cfg.window, cfg.net, extra)
    return extra
