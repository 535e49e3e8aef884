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
from ideal.avatar.mouth.training import (
    ClipGate,
    bootstrap_offsets,
    leave_one_speaker_out,
    predict_sequence,
    train_mouth_net,
)

log = logging.getLogger(__name__)

def read_speakers(path: Path) -> dict[str, str]:
    """Clip name -> speaker from a json map (clips of one person share a speaker name)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
        return {str(k): str(v) for k, v in data.items()}
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"{path}: unreadable speakers file ({exc})",
                         "pass a json {clip name: speaker name}, e.g. {\"vlog_w1\": \"vlog_w1\"}") from exc


def load_clips(inputs: list[str | Path], cache_dir: Path | None = None,
               speakers: dict[str, str] | None = None) -> list[MouthClip]:
    """Track every clip (cached); a bad clip is skipped with a warning, none usable is an error.

    speakers: clip name (file stem) -> speaker; clips not in it are named by the first word of the file name."""
    from ideal.avatar.progress import progress_bar

    clips, errors = [], []
    for video, audio in progress_bar(find_clips(inputs), desc="clips", unit="clip"):
        try:
            clips.append(load_clip(video, audio, speaker=(speakers or {}).get(video.stem), cache_dir=cache_dir))
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
        out = {str(k): float(v["offset_ms"]) for k, v in (data.get("clip_gate") or {}).items()}  # left-out clips too
        out.update({d["name"]: float(d["av_offset_ms"]) for d in data["training_data"]})
        return out
    data = data.get("offsets_ms", data)
    try:
        return {str(k): float(v) for k, v in data.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: not a map of clip names to milliseconds", "e.g. {\"obama_20s\": 160}") from exc


def read_clip_gate(path: Path) -> dict[str, dict] | None:
    """The quality gate's verdict per clip recorded in a mouth model's mouth.json (None if it has none)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    gate = data.get("clip_gate") if isinstance(data, dict) else None
    return gate if isinstance(gate, dict) else None


def clip_offsets(clips: list[MouthClip], seqs, cfg: PipelineConfig,
                 known: dict[str, float] | None = None,
                 known_gate: dict[str, dict] | None = None) -> tuple[dict[int, float], str, list]:
    """A/V offset of every training clip: given ones first; else the bootstrap when there are >= 2
    speakers, else the shipped model's (or the energy envelope's) estimate.

    The history's last entry (when there is one) holds the quality gate's verdict per clip."""
    if known is not None:
        missing = [c.name for c in clips if c.name not in known]
        if not missing:
            history = [known_gate] if known_gate and all(c.name in known_gate for c in clips) else []
            return {i: known[c.name] for i, c in enumerate(clips)}, "given", history
        log.warning("no known offset for %s: estimating all clips", ", ".join(missing))
    if len({c.speaker for c in clips}) >= 2 and cfg.bootstrap_rounds > 0:
        n_speakers = len({c.speaker for c in clips})
        gate = ClipGate(cfg.gate_min_r, cfg.gate_min_margin) if n_speakers >= cfg.gate_min_speakers else None
        if gate is None:
            log.info("quality gate not applied: %d speakers (it needs %d: each clip is judged by a model trained "
                     "on the others)", n_speakers, cfg.gate_min_speakers)
        from dataclasses import replace

        # single nets: the lag search needs a fair model per held-out speaker, not the ensemble's extra r
        offsets, history = bootstrap_offsets(seqs, clips, cfg.spec, cfg.window, cfg.train,
                                             replace(cfg.net, members=1), cfg.bootstrap_rounds, gate=gate)
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
                     known_offsets: dict[str, float] | None = None,
                     known_gate: dict[str, dict] | None = None) -> dict:
    """Bootstrap offsets and gate the clips, optionally measure LOSO, train on the kept clips and write the
    model dir. A clip the gate leaves out is logged as a warning and listed in mouth.json `clip_gate`."""
    cfg = cfg or PipelineConfig()
    if sum(len(c.mouth) for c in clips) < cfg.train.batch_size:
        raise InputError(f"only {sum(len(c.mouth) for c in clips)} frames of training video",
                         "pass at least a few seconds of talking-head video")
    seqs = build_bank(clips, cfg.spec, cfg.augment, cache_dir=cache_dir)
    offsets, offset_method, history = clip_offsets(clips, seqs, cfg, known_offsets, known_gate)
    verdicts = history[-1] if history else {}
    for i, c in enumerate(clips):
        level = logging.WARNING if abs(offsets[i]) > 80 else logging.INFO
        log.log(level, "%s: A/V offset %+.0f ms (%s)", c.name, offsets[i], offset_method)
    left_out = {c.name: verdicts[c.name].get("reason", "") for c in clips
                if c.name in verdicts and not verdicts[c.name].get("kept", True)}
    for name, why in left_out.items():
        log.warning("%s: left out by the quality gate: its audio and mouth do not agree at any offset (%s)",
                    name, why)
    kept = [i for i, c in enumerate(clips) if c.name not in left_out]
    if not kept:
        raise InputError("the quality gate left out every clip: " + "; ".join(f"{k}: {v}" for k, v in left_out.items()),
                         "check the clips' audio belongs to the face shown, or lower --gate-min-r")
    clips, seqs, offsets = _subset(clips, seqs, offsets, kept)
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
        "clip_gate": verdicts,
        "left_out": left_out,
        "train_config": cfg.train.to_dict(),
        "augment": cfg.augment.to_dict(),
        "metrics": metrics,
    }
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        save_mouth_model(tmp, module, cfg.spec, cfg.window, cfg.net, extra)
    return extra


def _subset(clips: list[MouthClip], seqs, offsets: dict[int, float], keep: list[int]):
    """The kept clips, renumbered: (clips, sequences, offsets) with clip indices 0..len(keep)-1."""
    from dataclasses import replace

    if len(keep) == len(clips):
        return clips, seqs, offsets
    new_index = {old: new for new, old in enumerate(keep)}
    return ([clips[i] for i in keep], [replace(s, clip=new_index[s.clip]) for s in seqs if s.clip in new_index],
            {new_index[i]: offsets[i] for i in keep})
