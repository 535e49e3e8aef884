"""The audio-to-mouth network and the shipped-model container.

`MouthNet` maps one audio window (B, L, D) to the 10-dim mouth slice of the expression vector (B, 10). It is
a compact temporal convolution net with static shapes and no data-dependent control flow, so it exports to
ONNX (and TensorRT) with the rest of the avatar. Targets are standardised during training; the de-
standardisation (and, for cepstral input, the fixed DCT) live inside the module as buffers, so the module's
output is directly in expression units and its input is directly the feature window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ideal.avatar.audio.features import AudioWindow, MelConfig
from ideal.avatar.errors import AvatarError
from ideal.avatar.expression import SLICES
from ideal.avatar.manifest import MOUTH_MODEL_DIR, write_json
from ideal.avatar.mouth.config import NetConfig
from ideal.avatar.mouth.features import FeatureSpec, dct_matrix

log = logging.getLogger(__name__)

# A low-latency variant (40 ms lookahead; docs/mouth.md gives LOSO r against lookahead) for live use, beside the
# default 120 ms model.
LIVE_MOUTH_MODEL_DIR = MOUTH_MODEL_DIR / "live40"
MOUTH_FORMAT_VERSION = 1
MOUTH_MANIFEST = "mouth.json"
MOUTH_WEIGHTS = "weights.pt"
MOUTH_FIELDS: tuple[str, ...] = SLICES["mouth"].fields
N_OUT = len(MOUTH_FIELDS)


class MouthNet(nn.Module):
    """(B, window_length, spec.input_dim) float32 -> (B, 10) mouth slice in expression units."""

    def __init__(self, spec: FeatureSpec, window_length: int, net: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.window_length = window_length
        d_in = spec.input_dim
        if spec.kind == "cepstral":
            self.register_buffer("frontend", torch.from_numpy(dct_matrix(spec.mel.n_mels, spec.n_ceps)))
            d_in = spec.n_ceps
        else:
            self.register_buffer("frontend", torch.eye(d_in))
        self.conv, self.head = _branch(d_in, window_length, net)
        # further ensemble members (NetConfig.members): the same branch again, outputs averaged
        self.more = nn.ModuleList([nn.ModuleDict(dict(zip(("conv", "head"), _branch(d_in, window_length, net))))
                                   for _ in range(net.members - 1)])
        self.register_buffer("out_mean", torch.zeros(N_OUT))
        self.register_buffer("out_std", torch.ones(N_OUT))

    def forward_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, 10) standardised targets (what the loss sees)."""
        z = torch.matmul(x, self.frontend).transpose(1, 2)  # (B, D', L)
        out = self.head(self.conv(z))
        for member in self.more:
            out = out + member["head"](member["conv"](z))
        return out / (1 + len(self.more))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalised(x) * self.out_std + self.out_mean


def _branch(d_in: int, window_length: int, net: NetConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """One member of the net: temporal convolutions, then a head on the flattened time axis."""
    c = net.channels
    conv = nn.Sequential(
        nn.Conv1d(d_in, c, kernel_size=5, stride=2, padding=2), nn.GELU(),
        nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1), nn.GELU(),
        nn.Conv1d(c, c, kernel_size=3, padding=1), nn.GELU(),
    )
    t_out = (window_length + 3) // 4  # two stride-2 convolutions
    # Flattening (not pooling) keeps *where* in the window a sound is: the current frame sits at a
    # fixed position, the rest is context.
    head = nn.Sequential(
        nn.Flatten(), nn.Dropout(net.dropout), nn.Linear(c * t_out, net.hidden), nn.GELU(),
        nn.Linear(net.hidden, N_OUT),
    )
    return conv, head


def assemble_members(members: list[MouthNet], spec: FeatureSpec, window_length: int, net: NetConfig) -> MouthNet:
    """One MouthNet averaging independently trained single nets (their label scaling must be the same)."""
    from dataclasses import replace

    out = MouthNet(spec, window_length, replace(net, members=len(members)))
    first = members[0]
    out.conv.load_state_dict(first.conv.state_dict())
    out.head.load_state_dict(first.head.state_dict())
    for slot, m in zip(out.more, members[1:]):
        slot["conv"].load_state_dict(m.conv.state_dict())
        slot["head"].load_state_dict(m.head.state_dict())
    out.out_mean.copy_(first.out_mean)
    out.out_std.copy_(first.out_std)
    return out.eval()


@dataclass
class MouthModel:
    """A trained audio-to-mouth model: what the streamer, dub and export read."""

    window: AudioWindow
    spec: FeatureSpec
    module: MouthNet
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def mel_config(self) -> MelConfig:
        return self.spec.mel

    @property
    def fields(self) -> tuple[str, ...]:
        return MOUTH_FIELDS

    def predict(self, windows: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """(B, window.length, input_dim) feature windows -> (B, 10) mouth slices (mouth_open is column 0)."""
        windows = np.asarray(windows, dtype=np.float32)
        expected = (self.window.length, self.spec.input_dim)
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(f"expected windows (B, {expected[0]}, {expected[1]}), got {windows.shape}")
        self.module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(windows), batch_size):
                out.append(self.module(torch.from_numpy(windows[i:i + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, N_OUT), dtype=np.float32)


def save_mouth_model(directory: Path, module: MouthNet, spec: FeatureSpec, window: AudioWindow, net: NetConfig,
                     extra: dict[str, Any] | None = None) -> None:
    """Write mouth.json + weights.pt into `directory` (which must exist)."""
    directory = Path(directory)
    torch.save(module.state_dict(), directory / MOUTH_WEIGHTS)
    manifest = {
        "format_version": MOUTH_FORMAT_VERSION,
        "kind": "audio_to_mouth",
        "features": spec.to_dict(),
        "window": window.to_dict(),
        "net": net.to_dict(),
        "output_fields": list(MOUTH_FIELDS),
        "weights": MOUTH_WEIGHTS,
        "weights_sha256": hashlib.sha256((directory / MOUTH_WEIGHTS).read_bytes()).hexdigest(),
        **(extra or {}),
    }
    write_json(directory / MOUTH_MANIFEST, manifest)


def load_mouth_model(path: Path | str | None = None) -> MouthModel:
    """Load a mouth model directory (default: the shipped one, avatar/assets/mouth_model).

    Raises AvatarError naming the directory when it is missing, corrupt or from another format version."""
    directory = Path(path) if path is not None else MOUTH_MODEL_DIR
    hint = "retrain it with `ideal mouth train --data VIDEOS... -o DIR` or omit --model to use the shipped one"
    if not directory.is_dir():
        raise AvatarError(f"{directory}: no such mouth model directory", hint)
    mpath = directory / MOUTH_MANIFEST
    if not mpath.exists():
        raise AvatarError(f"{directory}: not a mouth model directory ({MOUTH_MANIFEST} is missing)", hint)
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AvatarError(f"{mpath}: corrupt mouth model manifest ({exc})", hint) from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != MOUTH_FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise AvatarError(f"{mpath}: mouth model format version {found!r}, this ideal-nerf reads "
                          f"{MOUTH_FORMAT_VERSION}", hint)
    try:
        spec = FeatureSpec.from_dict(manifest["features"])
        window = AudioWindow.from_dict(manifest["window"])
        net = NetConfig(**manifest["net"])
        fields = tuple(manifest["output_fields"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AvatarError(f"{mpath}: incomplete mouth model manifest ({exc.__class__.__name__}: {exc})", hint) from exc
    if fields != MOUTH_FIELDS:
        raise AvatarError(f"{mpath}: model predicts {fields}, this ideal-nerf's mouth slice is {MOUTH_FIELDS}", hint)
    wpath = directory / manifest.get("weights", MOUTH_WEIGHTS)
    if not wpath.exists():
        raise AvatarError(f"{directory}: mouth model weights {wpath.name} are missing", hint)
    module = MouthNet(spec, window.length, net)
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # torch raises several types for truncated / mismatched files
        raise AvatarError(f"{wpath}: unreadable mouth model weights ({exc.__class__.__name__})", hint) from exc
    module.eval()
    return MouthModel(window=window, spec=spec, module=module, manifest=manifest, path=directory)
