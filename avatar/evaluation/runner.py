"""One evaluation run: every method on the same held-out frames, in both modes, measured the same way.

Methods: the avatar(s) under test ("ours"; several = several training seeds), the `--fusion concat` ablation
avatar(s), and the nearest-training-frame baseline. Modes:
- reconstruction: the held-out frames' own tracked expressions (and audio windows, and poses) drive the avatar;
- audio: the mouth slice comes from the held-out audio through the speaker-independent audio-to-mouth model
  (with the same silence gate and smoothing as `ideal dub`), the other slices from the tracked expressions.
  These are the lip-sync figures.
The head pose is the tracked pose in both modes, so Pose-D measures how faithfully the pose is rendered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ideal.avatar.progress import progress_bar

from ideal.avatar.errors import InputError
from ideal.avatar.evaluation.face_metrics import TrackedFrames, face_metrics
from ideal.avatar.evaluation.heldout import HeldOut, load_heldout, paste_crop
from ideal.avatar.evaluation.image_metrics import head_crop_metrics, image_metrics
from ideal.avatar.mouth.calibration import MouthCalibration

if TYPE_CHECKING:
    from ideal.avatar.loading import LoadedAvatar

log = logging.getLogger(__name__)

MODES = ("reconstruction", "audio")
LOWER_IS_BETTER = ("l1", "lmd", "lmd_mouth", "lmdv", "lmdv_mouth", "au_error", "pose_d")  # all others: higher
HEADLINE = ("l1", "psnr", "ssim", "lmd", "lmd_mouth", "lmdv", "au_error", "pose_d", "mouth_open_r", "face_found")


@dataclass(frozen=True)
class EvalConfig:
    """The fields are `ideal evaluate`'s options (ideal/configcli.py derives them)."""

    tier: str | None = field(default=None, metadata={"help": "quality tier to render (none: the best one)"})
    batch_size: int = field(default=8, metadata={"help": "frames per render call"})
    lmd_reference_px: int = field(default=512, metadata={
        "help": "LMD/LMDV are reported in pixels of the frame scaled to this width"})
    max_frames: int | None = field(default=None, metadata={"help": "evaluate only the first N held-out frames"})
    device: str = field(default="cpu", metadata={"help": "torch device for the PyTorch backend"})
    mouth_model: str | None = field(default=None, metadata={
        "help": "audio-to-mouth model dir (none: the shipped one)"})


@dataclass
class MethodRun:
    """One method in one mode: its head crops and tracker output, row-aligned with the held-out frames."""

    name: str
    role: str  # "ours" | "ablation" | "baseline"
    mode: str
    crops: np.ndarray  # (V, S, S, 3) uint8
    tracked: TrackedFrames
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""


@dataclass
class EvalRun:
    held: HeldOut
    tier: str
    real: TrackedFrames
    runs: list[MethodRun]
    avatars: dict[str, dict]  # name -> {"path", "role", "fusion", "seed", ...}
    audio_mouth: np.ndarray  # (V, 10) the mouth slices the audio mode used
    timings_s: dict[str, float]


def best_tier(tiers: dict) -> str:
    """The tier with the most field evaluations (the slowest, best-looking one)."""
    return max(tiers, key=lambda k: (tiers[k].rays ** 2 * tiers[k].samples, tiers[k].output))


def render_crops(avatar, held: HeldOut, expression: np.ndarray, tier: str, batch_size: int,
                 desc: str) -> np.ndarray:
    """Render the held-out frames with `expression` (V, 20) and composite them on each frame's base:
    (V, S, S, 3) uint8."""
    import cv2

    out = np.empty_like(held.real)
    v = len(held.index)
    for s in progress_bar(range(0, v, batch_size), desc=desc, unit="batch", leave=False):
        e = slice(s, min(s + batch_size, v))
        r = avatar.backend.render(held.audio[e], expression[e].astype(np.float32), held.pose[e], tier)
        rgb, alpha = np.asarray(r.rgb, np.float32), np.asarray(r.alpha, np.float32)
        if rgb.shape[1] != held.size:  # a tier whose output differs from the evaluation size
            rgb = np.stack([cv2.resize(x, (held.size, held.size)) for x in rgb])
            alpha = np.stack([cv2.resize(x, (held.size, held.size))[..., None] for x in alpha])
        base = held.base[e].astype(np.float32) / 255.0
        comp = rgb * alpha + base * (1.0 - alpha)  # straight (not premultiplied) colour over the base
        out[e] = np.clip(comp * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def track_crops(held: HeldOut, crops: np.ndarray, frame_numbers: np.ndarray | None = None) -> TrackedFrames:
    """Paste crops into their full frames (the held-out frame, or `frame_numbers`' frames) and track them."""
    from ideal.avatar.evaluation.tracking import track_frames

    numbers = held.index if frame_numbers is None else frame_numbers
    frames = (paste_crop(held.full_frame(int(n)), c, held.crop) for n, c in zip(numbers, crops))
    return track_frames(frames, held.neutral)


def audio_mouth_for(held: HeldOut, mouth_model, calibration: MouthCalibration | None = None) -> np.ndarray:
    """Mouth slices of the held-out frames from the dataset audio, as `ideal dub` computes them (with the
    avatar's mouth `calibration`): (V, 10)."""
    from ideal.avatar.mouth.gate import gated_mouth_track
    from ideal.avatar.mouth.inference import predict_frames

    raw = predict_frames(mouth_model, held.audio_16k, held.n_frames, held.fps)
    gated, _ = gated_mouth_track(raw, held.audio_16k, held.fps, mouth_model.window.lookahead_ms,
                                  calibration=calibration)
    return gated[held.index]


def _measure(run: MethodRun, held: HeldOut, real: TrackedFrames, scale: float) -> None:
    # head-crop figures on each real frame's head box; the whole render crop too, labelled "_crop"
    head = [head_crop_metrics(r, f, tuple(b)) for r, f, b in zip(held.real, run.crops, held.head_box)]
    whole = [image_metrics(r, f) for r, f in zip(held.real, run.crops)]
    m = {k: float(np.mean([p[k] for p in head])) for k in head[0]}
    m.update({f"{k}_crop": float(np.mean([p[k] for p in whole])) for k in whole[0]})
    m.update(face_metrics(real, run.tracked, held.index, scale))
    run.metrics = m


def run_evaluation(avatar_paths: list[Path], dataset: Path, ablation_paths: list[Path] = (),
                   cfg: EvalConfig = EvalConfig()) -> EvalRun:
    """Evaluate `avatar_paths` (seeds of one configuration) and `ablation_paths` on `dataset`'s held-out set."""
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.mouth import load_mouth_model

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if not avatar_paths:
        raise InputError("no avatar to evaluate", "pass an avatar directory")
    entries = [(Path(p), "ours") for p in avatar_paths] + [(Path(p), "ablation") for p in ablation_paths]
    loaded = []
    for path, role in entries:
        av = load_avatar(path, device=cfg.device)
        loaded.append((path, role, av))
    first = loaded[0][2]
    tier = cfg.tier or best_tier(first.tiers)
    for path, _, av in loaded:
        if tier not in av.tiers:
            raise InputError(f"{path}: has no tier {tier!r} (it has {', '.join(av.tiers)})", "pass --tier")
        if av.window != first.window or av.mel_config != first.mel_config:
            raise InputError(f"{path}: audio window/features differ from {loaded[0][0]}",
                             "compare avatars trained with the same audio settings")
    size = first.tiers[tier].output
    held = load_heldout(dataset, size, first.window, first.mel_config, cfg.max_frames)
    for path, _, av in loaded:
        _check_trained_on(path, av, held)
    scale = cfg.lmd_reference_px / float(held.frame_size[0])
    timings["load"] = time.perf_counter() - t0
    log.info("held-out: %d frames (%d-%d) of %s; tier %s at %d px; LMD scaled x%.3f to %d px",
             len(held.index), held.index[0], held.index[-1], dataset, tier, size, scale, cfg.lmd_reference_px)

    mouth_model = load_mouth_model(cfg.mouth_model)
    from ideal.avatar.expression import SLICES

    def drives_for(av) -> dict[str, np.ndarray]:
        """Both modes' expressions; the audio mode's mouth through this avatar's own mouth calibration."""
        expr_audio = held.expression.copy()
        expr_audio[:, SLICES["mouth"].indices] = audio_mouth_for(held, mouth_model, av.mouth_calibration)
        return {"reconstruction": held.expression, "audio": expr_audio}

    t = time.perf_counter()
    real = _track_real(held)  # the real full frames, untouched
    timings["track_real"] = time.perf_counter() - t

    runs: list[MethodRun] = []
    avatars: dict[str, dict] = {}
    audio_mouth: np.ndarray | None = None  # the first avatar's (ours): what the report's audio-drive stats show
    names = _unique_names([p for p, _, _ in loaded])
    for (path, role, av), name in zip(loaded, names):
        avatars[name] = {"path": str(path), "role": role, **_training_facts(av)}
        drives = drives_for(av)
        if audio_mouth is None:
            audio_mouth = drives["audio"][:, SLICES["mouth"].indices]
        for mode in MODES:
            t = time.perf_counter()
            crops = render_crops(av, held, drives[mode], tier, cfg.batch_size, f"{name} {mode}")
            timings[f"render:{name}:{mode}"] = time.perf_counter() - t
            t = time.perf_counter()
            run = MethodRun(name, role, mode, crops, track_crops(held, crops), source=str(path))
            _measure(run, held, real, scale)
            timings[f"measure:{name}:{mode}"] = time.perf_counter() - t
            runs.append(run)
            log.info("%s %s: %s", name, mode, {k: round(run.metrics[k], 3) for k in HEADLINE})

    t = time.perf_counter()
    base_tracked = track_crops(held, held.baseline_crops, held.baseline_source)
    for mode in MODES:  # the baseline ignores expressions, so both modes show the same frames
        run = MethodRun("baseline", "baseline", mode, held.baseline_crops, base_tracked,
                        source="nearest training frame by audio window")
        _measure(run, held, real, scale)
        runs.append(run)
    timings["baseline"] = time.perf_counter() - t
    # the measurement floor: the real crop itself, resampled to the render size and back like every render,
    # then tracked. No method rendering at this size can score better on the face metrics.
    floor_tracked = track_crops(held, held.real)
    for mode in MODES:
        run = MethodRun("real@render-size", "floor", mode, held.real, floor_tracked,
                        source="the real head crop at the render size (measurement floor)")
        _measure(run, held, real, scale)
        runs.append(run)
    timings["total"] = time.perf_counter() - t0
    return EvalRun(held, tier, real, runs, avatars, audio_mouth, timings)


def _track_real(held: HeldOut) -> TrackedFrames:
    from ideal.avatar.evaluation.tracking import track_frames

    return track_frames((held.full_frame(int(n)) for n in held.index), held.neutral)


def _check_trained_on(path: Path, avatar: LoadedAvatar, held: HeldOut) -> None:
    """Warn when an avatar was trained on another dataset or split: its "held-out" frames may have been
    training frames, and its figures would be flattered."""
    training = avatar.manifest.training
    if training.dataset and Path(training.dataset).resolve() != held.dataset.resolve():
        log.warning("%s was trained on %s, evaluated on %s", path, training.dataset, held.dataset)
    start, stop = training.split.val
    if not (start <= int(held.index[0]) and int(held.index[-1]) < stop):
        log.warning("%s: its training held out frames %s-%s, but frames %d-%d are evaluated", path, start,
                    stop - 1, held.index[0], held.index[-1])


def _unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base, k = p.name or str(p), 2
        name = base
        while name in names:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
    return names


def _training_facts(avatar: LoadedAvatar) -> dict:
    """Fusion, seed, steps and time of an avatar's training, from its manifest."""
    t = avatar.manifest.training
    return {"fusion": avatar.fusion, "seed": t.seed, "steps": t.steps, "seconds": t.seconds, "device": t.device,
            "threads": t.threads, "data_hash": t.data_hash, "dataset": t.dataset, "split": t.split.to_dict(),
            "held_out_psnr": t.held_out_psnr}
