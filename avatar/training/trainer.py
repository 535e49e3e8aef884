"""The training loop: random head-weighted rays for the field, plus one patch per refined tier so each
learned upsampler trains jointly with the field it upsamples (mixed-tier training)."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ideal.avatar.progress import progress_bar

from ideal.avatar.audio.features import silence_value
from ideal.avatar.compose import box_in_render_crop
from ideal.avatar.errors import AvatarError
from ideal.avatar.evaluation.image_metrics import psnr as psnr_db
from ideal.avatar.model.components.losses import composite, opacity_loss, photometric_loss, psnr
from ideal.avatar.model.components.rays import crop_pixel_grid
from ideal.avatar.model.components.encoders import set_input_stats
from ideal.avatar.model.config import ModelConfig
from ideal.avatar.model.models import IdealNeRF
from ideal.avatar.training.config import TrainConfig
from ideal.avatar.training.data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)  # training rays, composite
    val: list[dict] = field(default_factory=list)  # {"step", "seconds", "psnr_<tier>"}

    def to_dict(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "loss": self.loss, "psnr": self.psnr, "val": self.val}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)


class Trainer:
    def __init__(self, data: TrainingData, cfg: TrainConfig, model_cfg: ModelConfig,
                 checkpoint_dir: Path | None = None) -> None:
        self.data, self.cfg, self.model_cfg = data, cfg, model_cfg
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.model = IdealNeRF(model_cfg, data.crop).to(self.device)
        tr = torch.from_numpy(data.train_idx)
        set_input_stats(self.model.encoder.audio, torch.from_numpy(data.audio)[tr].to(self.device), (0, 1))
        set_input_stats(self.model.encoder.expression, torch.from_numpy(data.expression)[tr].to(self.device), (0,))
        planes = [p for n, p in self.model.named_parameters() if n.endswith(("field.planes", "field.basis"))]
        others = [p for n, p in self.model.named_parameters() if not n.endswith(("field.planes", "field.basis"))]
        self.opt = torch.optim.Adam([{"params": planes, "lr": cfg.lr_planes}, {"params": others, "lr": cfg.lr}])
        self.base_lrs = [cfg.lr_planes, cfg.lr]
        self.step = 0
        self.elapsed = 0.0  # optimisation seconds, summed over resumed runs
        self.rays_seen = 0
        self.history = History()
        self.checkpoint_dir = checkpoint_dir
        self._stop = False
        s, side = data.size, data.crop[2]
        self.pixel_grid = crop_pixel_grid(data.crop, s).to(self.device)  # (S*S, 2)
        self.tier_grids = {n: crop_pixel_grid(data.crop, t.rays).to(self.device) for n, t in model_cfg.tiers.items()}
        # tensors of the whole clip stay on the CPU as uint8; batches move to the device
        self.frames = torch.from_numpy(data.frames)
        self.base = torch.from_numpy(data.base)
        self.head = torch.from_numpy(data.head)
        self.mouth = torch.from_numpy(data.mouth)
        self.cell = max(1, s // 128)
        self.sampling = self._make_sampling_grid()
        self.audio = torch.from_numpy(data.audio)
        self.expression = torch.from_numpy(data.expression)
        self.pose = torch.from_numpy(data.pose)
        del side

    # --- batches -------------------------------------------------------------------------------------------
    def _make_sampling_grid(self) -> torch.Tensor:
        """(N, G, G) ray sampling weights on a coarse grid of cells (G = S / cell): 1 everywhere, + head_weight
        in the dilated head (so the silhouette edge is sampled), + mouth_weight in a blob around the mouth,
        + eye_weight in a blob around each eye."""
        s, c = self.data.size, self.cell
        g = s // c
        head = torch.from_numpy(self.data.head_dilated_cells(c)).float()  # (N, G, G) in [0, 1]
        yy, xx = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32),
                                indexing="ij")

        def blob(b: torch.Tensor) -> torch.Tensor:  # (N, 3) centre x, y and radius in pixels -> (N, G, G)
            m = b / c
            d2 = (xx[None] + 0.5 - m[:, 0, None, None]) ** 2 + (yy[None] + 0.5 - m[:, 1, None, None]) ** 2
            return torch.exp(-d2 / (2 * m[:, 2, None, None].clamp_min(1.0) ** 2))

        weights = 1.0 + self.cfg.head_weight * head + self.cfg.mouth_weight * blob(self.mouth)
        if self.cfg.eye_weight:
            eyes = torch.from_numpy(self.data.eyes)
            weights = weights + self.cfg.eye_weight * (blob(eyes[:, 0]) + blob(eyes[:, 1]))
        return weights

    def _sample_pixels(self, idx: torch.Tensor, n: int) -> torch.Tensor:
        """(B, n) flat S x S pixel indices drawn from the frames' sampling weights (inverse CDF over cells,
        then uniform inside the cell; torch.multinomial was a fifth of the step time here)."""
        s, c = self.data.size, self.cell
        g = s // c
        cdf = torch.cumsum(self.sampling[idx].reshape(len(idx), -1), dim=1)
        u = torch.rand(len(idx), n) * cdf[:, -1:]
        cell = torch.searchsorted(cdf, u).clamp_max(g * g - 1)
        y = (cell // g) * c + torch.randint(0, c, cell.shape)
        x = (cell % g) * c + torch.randint(0, c, cell.shape)
        return y * s + x

    def _gather(self, images: torch.Tensor, idx: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """images (N, S, S[, C]) uint8, frame idx (B,), flat pixel indices (B, R) -> (B, R, C) float in [0, 1]
        (indexes only the pixels needed, never whole frames)."""
        n = images.shape[0]
        view = images.reshape(n, self.data.size * self.data.size, -1)
        return view[idx[:, None], flat].float().div(255.0)

    def _cond(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        audio = self.audio[idx]
        if train and self.cfg.audio_dropout > 0:
            # audio-window dropout: for these frames the field must read the mouth from the expression slice
            # (which the speaker-independent mouth model drives from any voice), not from this speaker's audio
            drop = torch.rand(len(idx)) < self.cfg.audio_dropout
            audio = torch.where(drop[:, None, None], torch.full_like(audio, silence_value(self.data.mel_config)), audio)
        return self.model.encoder(audio.to(self.device), self.expression[idx].to(self.device))

    # --- one step ------------------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, int]:
        cfg, dev = self.cfg, self.device
        self.model.train()
        idx = torch.from_numpy(self.rng.choice(self.data.train_idx, cfg.batch_frames, replace=False)
                               if len(self.data.train_idx) >= cfg.batch_frames else
                               self.rng.choice(self.data.train_idx, cfg.batch_frames))
        cond = self._cond(idx, train=True)
        pose = self.pose[idx].to(dev)
        # random rays through the field at a random tier's sample count
        flat = self._sample_pixels(idx, cfg.rays_per_frame)
        pixels = self.pixel_grid[flat.to(dev)]  # (B, R, 2)
        tiers = list(self.model_cfg.tiers.values())
        n_samples = tiers[self.step % len(tiers)].samples
        rgb, acc, _ = self.model.ray_renderer(cond, pose, pixels, n_samples, jitter=True)
        rgb, acc = rgb.transpose(1, 2), acc.transpose(1, 2)  # (B, R, 3|1) rows like the targets
        target = self._gather(self.frames, idx, flat).to(dev)
        base = self._gather(self.base, idx, flat).to(dev)
        head = self._gather(self.head, idx, flat).to(dev) * 255.0
        pred = composite(rgb, acc, base)
        loss = photometric_loss(pred, target) + cfg.w_opacity * opacity_loss(acc, head)
        n_rays = flat.numel()
        train_psnr = psnr(pred.detach(), target)
        # one patch per refined tier: field -> refiner -> composite, compared at output resolution
        pf = min(cfg.patch_frames, len(idx))  # patches on the first frames only: the refiners need few
        for name, side in cfg.patch_sides().items():
            tier = self.model_cfg.tiers.get(name)
            if tier is None or not tier.refine:
                continue
            loss = loss + self._patch_loss(name, idx[:pf], cond[:pf], pose[:pf], side)
            n_rays += pf * side * side
        loss = loss + cfg.w_tv * self.model.ray_renderer.field.total_variation()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item(), train_psnr, n_rays

    def _patch_loss(self, name: str, idx: torch.Tensor, cond: torch.Tensor,
                    pose: torch.Tensor, side: int) -> torch.Tensor:
        tier = self.model_cfg.tiers[name]
        s, r, k = self.data.size, tier.rays, tier.output // tier.rays
        side = min(side, r)
        centre = self._sample_pixels(idx, 1).squeeze(1)  # a head-weighted patch centre per frame
        cy, cx = (centre // s) * r // s, (centre % s) * r // s
        py = (cy - side // 2).clamp(0, r - side)
        px = (cx - side // 2).clamp(0, r - side)
        ar = torch.arange(side)
        ray_rows = py[:, None, None] + ar[None, :, None]
        ray_cols = px[:, None, None] + ar[None, None, :]
        ray_flat = (ray_rows * r + ray_cols).reshape(len(idx), -1).to(self.device)
        pixels = self.tier_grids[name][ray_flat]  # (B, side*side, 2)
        rgb, acc, feat = self.model.ray_renderer(cond, pose, pixels, tier.samples, jitter=True)
        to_img = lambda x: x.reshape(len(idx), x.shape[1], side, side)  # noqa: E731
        rgb_o, alpha_o = self.model.refiners[name](to_img(rgb), to_img(acc), to_img(feat))
        ko = side * k
        oar = torch.arange(ko)
        out_flat = ((py[:, None, None] * k + oar[None, :, None]) * s + (px[:, None, None] * k + oar[None, None, :]))
        out_flat = out_flat.reshape(len(idx), -1)
        target = self._gather(self.frames, idx, out_flat).to(self.device)
        base = self._gather(self.base, idx, out_flat).to(self.device)
        head = self._gather(self.head, idx, out_flat).to(self.device) * 255.0
        to_rows = lambda x: x.reshape(len(idx), x.shape[1], -1).transpose(1, 2)  # noqa: E731
        pred = composite(to_rows(rgb_o), to_rows(alpha_o), base)
        # the refiner's convolutions see zero padding at the patch edge: score the interior only
        m = 2 * k
        inner = lambda x: x.reshape(len(idx), ko, ko, -1)[:, m:ko - m, m:ko - m]  # noqa: E731
        return (photometric_loss(inner(pred), inner(target))
                + self.cfg.w_opacity * opacity_loss(inner(to_rows(alpha_o)), inner(head)))

    # --- evaluation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def render_frames(self, idx: np.ndarray, tier: str) -> np.ndarray:
        """Composited crops (len(idx), S, S, 3) float32 in [0, 1] of dataset frames at a tier."""
        self.model.eval()
        out = []
        for i in idx:
            j = torch.tensor([int(i)])
            rgb, alpha = self.model.render(self.audio[j].to(self.device), self.expression[j].to(self.device),
                                           self.pose[j].to(self.device), tier)
            base = self.base[j].float().div(255.0).permute(0, 3, 1, 2).to(self.device)
            out.append(composite(rgb, alpha, base).permute(0, 2, 3, 1).cpu().numpy()[0])
        return np.stack(out)

    def eval_indices(self) -> np.ndarray:
        val = self.data.val_idx
        n = min(self.cfg.eval_frames, len(val))
        return val[np.linspace(0, len(val) - 1, n).round().astype(int)]

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out head-crop PSNR per tier: the composited render vs the real frame inside each frame's head
        box (`psnr_<tier>`, mean over frames; the issue's head crop), and over the whole render crop
        (`crop_psnr_<tier>`, inflated by the static background). `*_base_only`: the base alone (no head)."""
        idx = self.eval_indices()
        target = self.data.frames[idx].astype(np.float32) / 255.0
        boxes = [box_in_render_crop(self.data.head_boxes[i], self.data.crop, self.data.size) for i in idx]
        res: dict = {"step": self.step, "seconds": round(self.elapsed, 1)}
        preds = {name: self.render_frames(idx, name) for name in self.model_cfg.tiers}
        preds["base_only"] = self.data.base[idx].astype(np.float32) / 255.0
        for name, pred in preds.items():
            res[f"psnr_{name}"] = round(float(np.mean([psnr_db(p[y0:y1, x0:x1], t[y0:y1, x0:x1])
                                                       for p, t, (x0, y0, x1, y1) in zip(pred, target, boxes)])), 3)
            res[f"crop_psnr_{name}"] = round(float(np.mean([psnr_db(p, t) for p, t in zip(pred, target)])), 3)
        res["mouth_sensitivity"] = round(self.mouth_sensitivity(int(idx[0])), 4)
        return res

    @torch.no_grad()
    def mouth_sensitivity(self, frame: int, tier: str = "coarse") -> float:
        """Does the render follow the expression? Mean |rgb difference| in the mouth region between the clip's
        most-closed and most-open mouth expressions at one held-out frame's pose and audio (0 = ignored)."""
        from ideal.avatar.expression import MOUTH_OPEN_INDEX

        self.model.eval()
        train = self.data.train_idx
        opening = self.data.expression[train, MOUTH_OPEN_INDEX]
        exprs = torch.from_numpy(self.data.expression[[train[opening.argmin()], train[opening.argmax()]]])
        j = torch.tensor([frame, frame])
        rgb, alpha = self.model.render(self.audio[j].to(self.device), exprs.to(self.device),
                                       self.pose[j].to(self.device), tier)
        img = (rgb * alpha).cpu().numpy()
        x, y, r = (float(v) for v in self.data.mouth[frame])
        s = self.data.size
        y0, y1 = int(max(0, y - 2 * r)), int(min(s, y + 2 * r))
        x0, x1 = int(max(0, x - 2 * r)), int(min(s, x + 2 * r))
        return float(np.abs(img[0, :, y0:y1, x0:x1] - img[1, :, y0:y1, x0:x1]).mean())

    # --- schedule, checkpoints, loop -----------------------------------------------------------------------
    def progress(self) -> float:
        p = self.step / max(1, self.cfg.steps)
        if self.cfg.minutes:
            p = max(p, self.elapsed / (60.0 * self.cfg.minutes))
        return min(1.0, p)

    def _set_lr(self) -> None:
        f = self.cfg.lr_final_fraction ** self.progress()  # exponential decay to lr_final_fraction
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * f

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "rays_seen": self.rays_seen, "history": self.history.to_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "train_config": self.cfg.to_dict(), "model_config": self.model_cfg.to_dict(),
                "crop": list(self.data.crop)}

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / "last.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def init_weights_from(self, avatar_dir: Path) -> None:
        """Start from an avatar's weights (float16 or 32) with this run's fresh optimiser and schedule."""
        weights = torch.load(avatar_dir / "weights.pt", map_location="cpu", weights_only=True)
        state = {k: v.float() for k, v in weights["model"].items()}
        try:
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            raise AvatarError(f"--init-from {avatar_dir}: its weights do not fit this model ({str(exc)[:160]})",
                              "fine-tune from an avatar of the current format, trained on this dataset") from exc

    def load_checkpoint(self, path: Path) -> None:
        ck = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.step, self.elapsed, self.rays_seen = ck["step"], ck["elapsed"], ck.get("rays_seen", 0)
        self.history = History.from_dict(ck["history"])
        self.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])

    def done(self) -> bool:
        return self.step >= self.cfg.steps or (self.cfg.minutes is not None and self.elapsed >= 60.0 * self.cfg.minutes)

    def run(self) -> bool:
        """Optimise until the step or time budget is spent. Returns False when interrupted (Ctrl-C/SIGTERM),
        after saving a checkpoint."""
        total = self.cfg.steps
        bar = progress_bar(total=total, initial=self.step, desc="training", unit="step", dynamic_ncols=True)
        old = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        loss_ema = psnr_ema = None
        try:
            while not self.done():
                t0 = time.perf_counter()
                self._set_lr()
                loss, p, n_rays = self.train_step()
                self.elapsed += time.perf_counter() - t0
                self.step += 1
                self.rays_seen += n_rays
                loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
                psnr_ema = p if psnr_ema is None else 0.95 * psnr_ema + 0.05 * p
                if self.step % 5 == 0:
                    self.history.steps.append(self.step)
                    self.history.seconds.append(round(self.elapsed, 2))
                    self.history.loss.append(round(loss_ema, 6))
                    self.history.psnr.append(round(psnr_ema, 3))
                    bar.set_postfix(loss=f"{loss_ema:.4f}", psnr=f"{psnr_ema:.2f}",
                                    rays_s=f"{self.rays_seen / max(self.elapsed, 1e-6):.0f}")
                bar.update(1)
                if self.step % self.cfg.eval_every == 0:
                    res = self.evaluate()
                    self.history.val.append(res)
                    log.info("step %d (%.0f s): held-out head-box %s", self.step, self.elapsed,
                             ", ".join(f"{k}={v}" for k, v in res.items() if k.startswith("psnr")))
                if self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self._stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            path = self.save_checkpoint()
            log.warning("interrupted at step %d; checkpoint %s (continue with --resume)", self.step, path)
            return False
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, old)
        if not self.history.val or self.history.val[-1]["step"] != self.step:
            self.history.val.append(self.evaluate())
        self.save_checkpoint()
        return True

    @property
    def rays_per_second(self) -> float:
        return self.rays_seen / max(self.elapsed, 1e-6)


def set_threads(n: int | None) -> int:
    """n None = auto: all (at most 2) cores on a quiet machine, one thread when the load average says the
    cores are already busy (OpenMP threads spinning against other processes made a step 3x slower here)."""
    import os

    if n is None or n <= 0:
        cores = os.cpu_count() or 1
        busy = os.getloadavg()[0] > 0.75 * cores
        n = 1 if busy else min(2, cores)
    torch.set_num_threads(n)
    return n
