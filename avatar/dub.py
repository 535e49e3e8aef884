"""`ideal dub --avatar A --audio SPEECH [--expression DRIVER_VIDEO | audio | neutral] -o OUT.mp4`

Renders an avatar speaking any audio file (wav, m4a, mp3, the audio of an mp4; any rate or channel count).
The mouth follows the audio through the speaker-independent audio-to-mouth model (`--mouth driver` takes it
from the driver clip instead); brows, eyes and gaze come from another person's clip (cross-identity), from
the avatar's own prosody predictor (`audio`, the default) or stay neutral with idle blinks; the head moves
along the avatar's own pose track. The audio is muxed in. Every video carries a visible "synthetic" mark
(`--no-mark` removes it) and the container tag comment="synthetic: ideal-nerf".
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)

SILENCE_DBFS = -55.0  # loudest 40 ms frame quieter than this: the audio is treated as silent


@dataclass(frozen=True)
class DubConfig:
    """The fields are `ideal dub`'s options (ideal/configcli.py derives them)."""

    expression: str = field(default="audio", metadata={
        "help": "brows/eyes/gaze from: a driver VIDEO of another person, 'audio' (the avatar's prosody predictor) "
                "or 'neutral' (idle blinks only)"})
    mouth: Literal["audio", "driver"] = field(default="audio", metadata={
        "help": "mouth from the audio or from the driver video"})
    on_short: Literal["loop", "hold"] = field(default="loop", metadata={
        "help": "a driver shorter than the audio loops (ping-pong, no jump) or holds its last frame"})
    seed: int = field(default=0, metadata={"help": "seed of the idle motion (blinks, saccades, pose start)"})
    tier: str | None = field(default=None, metadata={"help": "quality tier (none: the avatar's best)"})
    mark: bool = field(default=True, metadata={"help": "the visible 'synthetic' mark"})
    batch_size: int = field(default=4, metadata={"help": "frames per render call"})


@dataclass
class DubPlan:
    """Everything that drives the render, per output frame."""

    audio_16k: np.ndarray
    fps: float
    windows: np.ndarray  # (N, W, n_mels) the avatar's audio windows
    expression: np.ndarray  # (N, 20)
    pose: np.ndarray  # (N, 3, 4)
    audio_mouth_open: np.ndarray  # (N,) gated mouth opening from the audio model (what the lips should do)
    track_index: np.ndarray  # (N,) pose-track frame per output frame (selects the base plate's torso frame)
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.expression)


def check_speech(audio_16k: np.ndarray, path: Path, fps: float) -> None:
    """InputError for audio that is empty, shorter than one frame or silent."""
    from ideal.avatar.mouth.gate import frame_levels_db

    if audio_16k.size == 0:
        raise InputError(f"{path}: audio is empty", "pass a file with speech in it")
    levels = frame_levels_db(audio_16k, fps)
    if levels.size == 0:
        raise InputError(f"{path}: audio is shorter than one video frame "
                         f"({audio_16k.size / SAMPLE_RATE * 1000:.0f} ms)",
                         "pass at least a second of speech")
    if levels.max() < SILENCE_DBFS:
        raise InputError(f"{path}: audio is silent (loudest frame {levels.max():.0f} dBFS)",
                         "pass a file with audible speech, or check the recording level")


def _driver_path(expression: str) -> Path | None:
    return None if expression in ("audio", "neutral") else Path(expression)


def plan_dub(avatar, audio_16k: np.ndarray, cfg: DubConfig, mouth_model=None,
             driver_expression: np.ndarray | None = None) -> DubPlan:
    """Per-frame audio windows, expressions and poses for dubbing `audio_16k` onto `avatar`.

    driver_expression: (M, 20) tracked driver clip at the avatar's fps (required when cfg.expression is a
    video path or cfg.mouth == "driver")."""
    from ideal.avatar.audio.features import compute_features, windows_for_frames
    from ideal.avatar.clock import FrameClock
    from ideal.avatar.drive import AudioExpression, ClipExpression, ExpressionDriver, NeutralExpression
    from ideal.avatar.expression import mouth_opening
    from ideal.avatar.idle import IdleConfig, IdleMotion, blink_depth_from_expressions
    from ideal.avatar.mouth.gate import gated_mouth_track
    from ideal.avatar.mouth.inference import predict_frames

    fps = float(avatar.fps)
    n = FrameClock(fps).frames_for_samples(len(audio_16k))
    mel = compute_features(audio_16k, avatar.mel_config)
    windows = windows_for_frames(mel, n, fps, avatar.window, avatar.mel_config)
    notes: list[str] = []

    # blinks as deep as this person's lids were seen to close in the training video
    depth = blink_depth_from_expressions(avatar.expression_track)
    idle = IdleMotion(avatar.pose_track, fps, seed=cfg.seed, cfg=IdleConfig(blink_depth=depth))

    if mouth_model is None:
        from ideal.avatar.mouth import load_mouth_model

        mouth_model = load_mouth_model()
    raw = predict_frames(mouth_model, audio_16k, n, fps)
    audio_mouth, _ = gated_mouth_track(raw, audio_16k, fps, mouth_model.window.lookahead_ms,
                                       calibration=avatar.mouth_calibration)

    clip = None
    if driver_expression is not None:
        clip = ClipExpression(driver_expression, cfg.on_short, name="the driver clip")
        note = clip.coverage_note(n, fps)
        if note:
            notes.append(note)
    if cfg.expression == "audio":
        from ideal.avatar.audio.features import windows_for_frames as wff

        pw = avatar.prosody_predictor.window
        prosody = avatar.prosody_predictor.predict_expression(wff(mel, n, fps, pw, avatar.mel_config))
        upper = AudioExpression(prosody, idle, depth)
    elif cfg.expression == "neutral":
        upper = NeutralExpression(idle, depth)
    else:
        if clip is None:
            raise InputError(f"{cfg.expression}: driver clip was not tracked", "pass a driver video")
        upper = clip
    if cfg.mouth == "driver" and clip is None:
        raise InputError("--mouth driver needs a driver clip", "pass --expression DRIVER_VIDEO")
    driver = ExpressionDriver(upper, idle, mouth_clip=clip if cfg.mouth == "driver" else None)
    expression, pose = driver.clip(n, audio_mouth)
    track = np.array([idle.track_index(i) for i in range(n)], dtype=np.int64)
    return DubPlan(audio_16k, fps, windows, expression, pose, mouth_opening(audio_mouth), track, notes)


def render_dub(avatar, plan: DubPlan, out: Path, cfg: DubConfig, progress: bool = True) -> dict:
    """Render, composite, mark and write the video with the audio muxed. Returns a few facts of the run."""
    import time

    from ideal.avatar.progress import progress_bar

    from ideal.avatar.compose import add_synthetic_mark, composite
    from ideal.avatar.evaluation.runner import best_tier
    from ideal.avatar.video_io import VideoWriter

    tier = cfg.tier or best_tier(avatar.tiers)
    if tier not in avatar.tiers:
        raise InputError(f"--tier {tier}: the avatar has tiers {', '.join(avatar.tiers)}", "pick one of them")
    t0 = time.perf_counter()
    meta = {"title": "ideal-nerf dub", "description": f"synthetic talking head rendered by ideal-nerf (tier {tier})"}
    with VideoWriter(out, plan.fps, plan.audio_16k, metadata=meta) as writer:
        bar = progress_bar(total=plan.n_frames, desc=f"dubbing {out.name}", unit="frame", disable=not progress)
        for s in range(0, plan.n_frames, cfg.batch_size):
            e = slice(s, min(s + cfg.batch_size, plan.n_frames))
            r = avatar.backend.render(plan.windows[e], plan.expression[e], plan.pose[e], tier)
            for k, i in enumerate(range(e.start, e.stop)):
                frame = composite(r.rgb[k], r.alpha[k], avatar.base_plate, avatar.crop, int(plan.track_index[i]))
                if cfg.mark:
                    frame = add_synthetic_mark(frame)
                writer.write(frame)
            bar.update(e.stop - e.start)
        bar.close()
    wall = time.perf_counter() - t0
    return {"frames": plan.n_frames, "tier": tier, "seconds": wall, "fps": plan.n_frames / max(wall, 1e-9)}


def dub(avatar_path: str | Path | None, audio_path: str | Path, out: str | Path, cfg: DubConfig = DubConfig(),
        progress: bool = True, mouth_model=None) -> tuple[DubPlan, dict]:
    """The whole `ideal dub`: validate inputs, plan, render. Returns the plan and the render facts."""
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.clock import DEFAULT_FPS
    from ideal.avatar.manifest import resolve_avatar

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"{out}: the output must be an .mp4 file", "pass -o NAME.mp4")
    if cfg.on_short not in ("loop", "hold"):
        raise InputError(f"--on-short {cfg.on_short}: unknown", "use loop or hold")
    driver = _driver_path(cfg.expression)
    if driver is None and cfg.mouth == "driver":
        raise InputError("--mouth driver needs a driver clip", "pass --expression DRIVER_VIDEO")
    if driver is not None and not driver.exists():
        raise InputError(f"{driver}: no such driver video", "pass a video path, or --expression audio|neutral")
    audio_path = Path(audio_path)
    audio = load_audio(audio_path)  # cheap checks first: a bad audio file fails before any model loads
    check_speech(audio, audio_path, DEFAULT_FPS)
    from ideal.avatar.loading import load_avatar

    avatar = load_avatar(resolve_avatar(avatar_path))
    driver_expr = None
    if driver is not None:
        from ideal.avatar.driver_clip import track_driver

        driver_expr = track_driver(driver, float(avatar.fps), progress=progress)
    plan = plan_dub(avatar, audio, cfg, mouth_model, driver_expr)
    for note in plan.notes:
        log.warning(note)
    facts = render_dub(avatar, plan, out, cfg, progress)
    facts["notes"] = plan.notes
    return plan, facts


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ideal.configcli import add_options

    p.add_argument("--avatar", default=None, help="avatar dir (default: the built-in avatar)")
    p.add_argument("--audio", required=True, type=Path, help="speech file: wav, m4a, mp3, mp4, ... any rate")
    options = add_options(p, DubConfig, fields=("expression", "mouth", "on_short", "tier", "seed", "mark",
                                                "batch_size"))
    p.add_argument("--mouth-model", default=None, help="audio-to-mouth model dir (default: the shipped one)")
    p.add_argument("--save-drive", type=Path, default=None,
                   help="also write the per-frame expressions, poses and audio mouth opening (.npz)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .mp4")
    p.set_defaults(_dub_options=options)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = args._dub_options.build(args)
    mouth_model = None
    if args.mouth_model is not None:
        from ideal.avatar.mouth import load_mouth_model

        mouth_model = load_mouth_model(args.mouth_model)
    plan, facts = dub(args.avatar, args.audio, args.output, cfg, mouth_model=mouth_model)
    if args.save_drive is not None:
        np.savez(args.save_drive, expression=plan.expression, pose=plan.pose,
                 audio_mouth_open=plan.audio_mouth_open, track_index=plan.track_index, fps=plan.fps)
    for note in facts["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.output}: {facts['frames']} frames ({facts['frames'] / plan.fps:.1f} s) at tier "
          f"{facts['tier']}, {facts['fps']:.1f} frames/s")
    return 0
