"""Writing the avatar dir: avatar.json, weights.pt, pose_track.npz, base_plate.npz, stats.json, loss_curve.png."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ideal.avatar.avatar_manifest import AvatarManifest, Consent, Prosody, RayCulling, Training, write_avatar_manifest
from ideal.avatar.compose import BasePlate
from ideal.avatar.dataset_manifest import Crop, Split
from ideal.avatar.manifest import AVATAR_FORMAT_VERSION, write_json
from ideal.avatar.model.components.prosody import ProsodyExpressionPredictor
from ideal.avatar.training.data import TrainingData
from ideal.avatar.training.trainer import Trainer

log = logging.getLogger(__name__)


def build_base_plate(data: TrainingData) -> BasePlate:
    import cv2

    d = data.directory
    n = data.manifest.n_frames
    bg = cv2.imread(str(d / "background.png"), cv2.IMREAD_COLOR)[:, :, ::-1]

    def frames():
        for i in range(n):
            rgb = cv2.imread(str(d / "frames" / f"{i:06d}.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1]
            labels = cv2.imread(str(d / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            yield rgb, labels

    return BasePlate.build(np.ascontiguousarray(bg), frames(), n)


def mouth_calibration_for(data: TrainingData):
    """The shipped mouth model's outputs scaled to this face's mouth range, fitted on the training frames."""
    from ideal.avatar.mouth.calibration import calibration_from_dataset

    cal = calibration_from_dataset(data.directory, frames=data.train_idx)
    log.info("mouth calibration (tracked RMS / mouth-model RMS on %d speech frames): %s; rest opening %.2f "
             "(%d silent frames)", cal.speech_frames, " ".join(f"{s:.2f}" for s in cal.scale), cal.rest[0],
             cal.silent_frames)
    return cal


def ray_culling_for(out: Path, manifest: AvatarManifest, model: torch.nn.Module, data: TrainingData,
                    pose_track: np.ndarray) -> RayCulling:
    """Measure the occupancy grid of the trained field (avatar.occupancy) over the training frames' expressions
    and audio, with budgets for the avatar's whole pose track; write occupancy.npz into `out` and return the
    manifest entry."""
    import copy

    from ideal.avatar import occupancy

    cpu_model = copy.deepcopy(model).cpu().eval()
    grid, budgets = occupancy.measure(cpu_model, data.expression, pose_track, data.audio)
    entry = occupancy.write(out, manifest, grid, budgets, occupancy.DEFAULT_OPACITY)
    log.info("ray culling: %.1f%% of the head box occupied; rays per frame %s", 100 * entry.occupied_fraction,
             ", ".join(f"{k} {b.rays}/{b.of}" for k, b in entry.tiers.items()))
    return entry


def state_dict_for_disk(model: torch.nn.Module, half: bool) -> dict:
    sd = model.state_dict()
    return {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in sd.items()}


def write_loss_curve(trainer: Trainer, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = trainer.history
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    minutes = np.asarray(h.seconds) / 60.0
    a1.plot(minutes, h.loss, lw=1)
    a1.set_yscale("log")
    a1.set_xlabel("training time (min)")
    a1.set_ylabel("loss (EMA)")
    a1.set_title("loss")
    a2.plot(minutes, h.psnr, lw=1, label="train rays (composite)")
    for key in sorted({k for v in h.val for k in v if k.startswith("psnr_")}):
        pts = [(v["seconds"] / 60.0, v[key]) for v in h.val if key in v]
        a2.plot(*zip(*pts), marker="o", ms=3, label=f"held-out {key[5:]}")
    a2.set_xlabel("training time (min)")
    a2.set_ylabel("PSNR (dB)")
    a2.set_title("PSNR")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_avatar(out: Path, trainer: Trainer, data: TrainingData, prosody: ProsodyExpressionPredictor,
                 consent: Consent, half: bool = False, prosody_stats: dict | None = None,
                 ray_culling: bool = True) -> None:
    """Everything of AVATAR_FILES (+ stats.json, loss_curve.png) into `out` (an existing, empty directory)."""
    m = data.manifest
    model = trainer.model
    torch.save({"model": state_dict_for_disk(model, half), "prosody": state_dict_for_disk(prosody, False)},
               out / "weights.pt")
    pose_track = np.load(data.directory / "pose.npz")["pose"].astype(np.float32)
    np.savez(out / "pose_track.npz", pose=pose_track,
             expression=np.load(data.directory / "expression.npy").astype(np.float32), fps=np.float32(m.fps))
    build_base_plate(data).save(out / "base_plate.npz")
    last = trainer.history.val[-1] if trainer.history.val else {}
    x0, y0, side = data.crop
    manifest = AvatarManifest(
        format_version=AVATAR_FORMAT_VERSION,
        kind="ideal-nerf",
        fps=m.fps,
        width=m.width,
        height=m.height,
        n_frames=m.n_frames,
        crop=Crop(x0=int(x0), y0=int(y0), x1=int(x0 + side), y1=int(y0 + side), size=int(side)),
        camera=m.camera,
        mel=data.mel_config,
        audio_window=data.window,
        prosody=Prosody(audio_window=prosody.window, slices=["brows", "eyes"], **(prosody_stats or {})),
        tiers=trainer.model_cfg.tiers,
        fusion=trainer.model_cfg.fusion,
        model=trainer.model_cfg,
        weights_dtype="float16" if half else "float32",
        rgb="straight (not premultiplied) colour; composite as rgb * alpha + base * (1 - alpha)",
        training=Training(
            steps=trainer.step, seconds=round(trainer.elapsed, 1), seed=trainer.cfg.seed,
            device=trainer.cfg.device, threads=torch.get_num_threads(),
            rays_per_second=round(trainer.rays_per_second, 1),
            data_hash=m.source.sha256, dataset=str(data.directory), source=m.source.path,
            split=Split(train=(int(data.train_idx[0]), int(data.train_idx[-1]) + 1),
                        val=(int(data.val_idx[0]), int(data.val_idx[-1]) + 1)),
            held_out_psnr={k[5:]: v for k, v in last.items() if k.startswith("psnr_")},
            held_out_psnr_whole_crop={k[10:]: v for k, v in last.items() if k.startswith("crop_psnr_")},
            psnr_definition="head box (head_boxes.npy mapped into the render crop), mean over held-out frames",
            config=trainer.cfg.to_dict(),
        ),
        av_offset_ms=m.audio.av_offset_ms,
        mouth_calibration=mouth_calibration_for(data),
        consent=consent,
        synthetic_mark=True,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if ray_culling:
        manifest = replace(manifest, ray_culling=ray_culling_for(out, manifest, model, data, pose_track))
    write_avatar_manifest(out, manifest)
    out.chmod(0o755)  # mkdtemp made it private; avatars are read by other users and services
    stats = {"history": trainer.history.to_dict(), "rays_per_second": trainer.rays_per_second,
             "training_seconds": trainer.elapsed, "steps": trainer.step,
             "parameters": sum(p.numel() for p in model.parameters()),
             "held_out": trainer.history.val, "prosody": prosody_stats or {}}
    write_json(out / "stats.json", stats)
    write_loss_curve(trainer, out / "loss_curve.png")
