"""Loading an avatar dir: validate it, build the model, and hand out a Backend and everything a renderer or
streamer needs (audio window, mel settings, tiers, crop, idle pose track, base plate, prosody predictor).

    avatar = load_avatar()                       # the built-in avatar
    out = avatar.backend.render(audio, expr, pose, "coarse")   # crops (B, S, S, 3) + (B, S, S, 1)
    frame = avatar.composite(out.rgb[0], out.alpha[0], frame_index=i)
"""

from __future__ import annotations

import logging
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ideal.avatar.audio.features import AudioWindow, MelConfig
from ideal.avatar.avatar_manifest import AvatarManifest, load_avatar_manifest
from ideal.avatar.backend import RenderOutput, Tier
from ideal.avatar.compose import BasePlate, composite
from ideal.avatar.errors import AvatarError, InputError
from ideal.avatar.expression import EXPRESSION_DIM
from ideal.avatar.manifest import resolve_avatar
from ideal.avatar.mouth.calibration import MouthCalibration
from ideal.avatar.occupancy import load as load_occupancy

if TYPE_CHECKING:  # torch-heavy: imported where the avatar is loaded
    from ideal.avatar.model.components.prosody import ProsodyExpressionPredictor

log = logging.getLogger(__name__)


class TorchBackend:
    """The PyTorch implementation of avatar.backend.Backend (the reference the ONNX/TensorRT backends match)."""

    name = "torch"

    def __init__(self, model, device: str = "cpu") -> None:
        import torch

        self.model = model.eval()
        self.device = torch.device(device)
        self._tiers = dict(model.cfg.tiers)
        # the refiners' convolutions run ~25% faster on channels-last weights (13.3 -> 10.4 ms per fast-tier
        # frame on one CPU thread; same outputs to 1e-6)
        for refiner in model.refiners.values():
            refiner.net.to(memory_format=torch.channels_last)
        self._traced: dict[tuple[str, str], object] = {}

    def _stage(self, kind: str, tier: str, example: tuple):
        """The tier's head renderer or refiner as a TorchScript trace (made on first use, shared weights): the
        traced graph runs its ~100 ops without taking the GIL per op, which is what a live process needs, where
        the event loop, the expression and the compositing threads want the interpreter at the same time (in the
        streamer the eager field ran 30% slower than alone). Eager module if tracing fails."""
        import torch

        key = (kind, tier)
        if key not in self._traced:
            module = self.model.head_renderer(tier) if kind == "field" else self.model.refiner(tier)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer notes on Python ints that are static per tier
                    traced = torch.jit.trace(module, example, check_trace=False)
                    for _ in range(2):  # TorchScript's profiling runs: slow, and not what a cost model should see
                        traced(*example)
                    self._traced[key] = traced
            except Exception as exc:
                log.warning("tracing %s/%s failed (%s); running it eagerly", kind, tier, exc)
                self._traced[key] = module
        return self._traced[key]

    @property
    def tiers(self) -> dict[str, Tier]:
        return self._tiers

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def render(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray, tier: str) -> RenderOutput:
        """audio (B, W, n_mels), expression (B, 20), pose (B, 3, 4) -> crops at the tier's output size."""
        import torch

        if tier not in self._tiers:
            raise InputError(f"unknown tier {tier!r}", f"choose one of {', '.join(self._tiers)}")
        cfg = self.model.cfg
        audio, expression, pose = (np.asarray(a, np.float32) for a in (audio, expression, pose))
        b = audio.shape[0]
        if audio.shape[1:] != (cfg.audio_window, cfg.n_mels) or expression.shape != (b, EXPRESSION_DIM) \
                or pose.shape != (b, 3, 4):
            raise ValueError(f"render expects audio (B, {cfg.audio_window}, {cfg.n_mels}), expression "
                             f"(B, {EXPRESSION_DIM}), pose (B, 3, 4); "
                             f"got {audio.shape}, {expression.shape}, {pose.shape}")
        dev = self.device
        timings = {}
        with torch.inference_mode():
            t0 = time.perf_counter()
            cond = self.model.encoder(torch.from_numpy(audio).to(dev), torch.from_numpy(expression).to(dev))
            self._sync()
            t1 = time.perf_counter()
            pose_t = torch.from_numpy(pose).to(dev)
            rgb, alpha, feat = self._stage("field", tier, (cond, pose_t))(cond, pose_t)
            self._sync()
            t2 = time.perf_counter()
            rgb, alpha = self._stage("refine", tier, (rgb, alpha, feat))(rgb, alpha, feat)
            self._sync()
            t3 = time.perf_counter()
            timings = {"eaa": (t1 - t0) * 1e3, "field": (t2 - t1) * 1e3, "refine": (t3 - t2) * 1e3}
            out = RenderOutput(rgb=rgb.permute(0, 2, 3, 1).float().cpu().numpy(),
                               alpha=alpha.permute(0, 2, 3, 1).float().cpu().numpy(), timings_ms=timings)
        return out


@dataclass
class LoadedAvatar:
    path: Path
    manifest: AvatarManifest
    window: AudioWindow
    mel_config: MelConfig
    tiers: dict[str, Tier]
    fps: float
    crop: tuple[float, float, float]  # x0, y0, side in full-frame pixels
    image_size: tuple[int, int]  # (width, height) of full frames
    pose_track: np.ndarray  # (N, 3, 4) the source video's head poses (idle motion)
    expression_track: np.ndarray  # (N, 20) the source video's expressions
    backend: TorchBackend
    prosody_predictor: ProsodyExpressionPredictor
    av_offset_ms: float
    fusion: str
    mouth_calibration: MouthCalibration = field(default_factory=MouthCalibration.identity)
    _base_plate: BasePlate | None = field(default=None, repr=False)

    @property
    def base_plate(self) -> BasePlate:
        if self._base_plate is None:
            self._base_plate = BasePlate.load(self.path / "base_plate.npz")
        return self._base_plate

    @property
    def model(self):
        return self.backend.model

    @property
    def prosody_window(self) -> AudioWindow:
        return self.prosody_predictor.window

    def base_frame(self, index: int) -> np.ndarray:
        return self.base_plate.frame(index)

    def composite(self, rgb: np.ndarray, alpha: np.ndarray, frame_index: int) -> np.ndarray:
        """One crop (S, S, 3) + (S, S, 1) over base frame `frame_index` -> full frame (H, W, 3) uint8."""
        return composite(rgb, alpha, self.base_plate, self.crop, frame_index)


def load_avatar(path: str | Path | None = None, device: str = "cpu", culling: bool = True) -> LoadedAvatar:
    """Validate and load an avatar dir (None or "default" = the built-in avatar). `culling=False` renders every
    ray even where the avatar has an occupancy grid (`ideal occupancy`)."""
    import torch

    from ideal.avatar.model.components.prosody import ProsodyExpressionPredictor
    from ideal.avatar.model.models import IdealNeRF

    directory = resolve_avatar(path)
    m = load_avatar_manifest(directory)
    cfg, crop = m.model, m.crop.box
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device}: no CUDA device here", "use device='cpu'")
    try:
        weights = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        model = IdealNeRF(cfg, crop)
        state = {k: v.float() for k, v in weights["model"].items()}
        for k, v in model.state_dict().items():  # avatars from before input standardisation: identity stats
            if k.endswith(("input_mean", "input_std")) and k not in state:
                state[k] = v
        model.load_state_dict(state)
        prosody = ProsodyExpressionPredictor()
        prosody.load_state_dict(weights["prosody"])
    except Exception as exc:
        message = f"{directory / 'weights.pt'}: unreadable or does not match avatar.json ({exc})"
        raise AvatarError(message.split("\n")[0], "re-run `ideal train`") from exc
    try:
        with np.load(directory / "pose_track.npz", allow_pickle=False) as z:
            pose_track = z["pose"].astype(np.float32)
            expression_track = z["expression"].astype(np.float32)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AvatarError(f"{directory / 'pose_track.npz'}: unreadable ({exc})", "re-run `ideal train`") from exc
    if pose_track.ndim != 3 or pose_track.shape[1:] != (3, 4):
        raise AvatarError(f"{directory / 'pose_track.npz'}: pose shape {pose_track.shape}, expected (N, 3, 4)",
                          "re-run `ideal train`")
    occupancy = load_occupancy(directory, m) if culling else None
    if occupancy is not None:
        model.set_culling(torch.from_numpy(occupancy[0]).float(), occupancy[1])
    model = model.to(device).eval()
    prosody = prosody.to(device).eval()
    return LoadedAvatar(path=directory, manifest=m, window=m.audio_window, mel_config=m.mel, tiers=m.tiers, fps=m.fps,
                        crop=crop, image_size=(m.width, m.height), pose_track=pose_track,
                        expression_track=expression_track, backend=TorchBackend(model, device),
                        prosody_predictor=prosody, av_offset_ms=m.av_offset_ms, fusion=m.fusion,
                        mouth_calibration=m.mouth_calibration or MouthCalibration.identity())
