"""The avatar dir's manifest (`avatar.json`, written by `ideal train`) as a typed record.

Sections whose schema belongs to another module are that module's class (ModelConfig, MelConfig, AudioWindow,
Tier, MouthCalibration); the training record's run configuration is kept as the JSON it is, since it grows
with the trainer's options. Keys that older avatars of the same format version lack are `absent()`: they read
as None. docs/formats.md says what each key means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ideal.avatar.audio.features import AudioWindow, MelConfig
from ideal.avatar.backend import Tier
from ideal.avatar.dataset_manifest import Camera, Crop, Split
from ideal.avatar.manifest import AVATAR, load_manifest, write_manifest
from ideal.avatar.model.config import ModelConfig
from ideal.avatar.mouth.calibration import MouthCalibration
from ideal.avatar.records import Json, Record, absent

# Keys another command than `ideal train` rewrites: the hint for a bad one names that command.
_FIXES = {"mouth_calibration": "re-run `ideal mouth calibrate` or `ideal train`",
          "ray_culling": "re-run `ideal occupancy` (or `ideal occupancy --off` to render every ray)"}


@dataclass(frozen=True, kw_only=True)
class Prosody(Record):
    """The audio-to-expression (brows, eyes) predictor's window and its held-out correlation per field."""

    audio_window: AudioWindow
    slices: list[str]
    held_out_r: dict[str, float] | None = absent()


@dataclass(frozen=True, kw_only=True)
class Training(Record):
    """How the avatar was trained: figures, data identity and split, and the run's configuration."""

    steps: int
    seconds: float
    seed: int
    device: str
    threads: int
    rays_per_second: float
    data_hash: str  # the source video's sha256 (avatar.training.data.dataset_hash)
    dataset: str
    source: str | None
    split: Split
    held_out_psnr: dict[str, float]
    held_out_psnr_whole_crop: dict[str, float] | None = absent()
    psnr_definition: str | None = absent()
    config: Json  # TrainConfig.to_dict() of the run


@dataclass(frozen=True, kw_only=True)
class Consent(Record):
    confirmed: bool
    method: str  # "flag" | "prompt"
    at: str  # ISO 8601, UTC


@dataclass(frozen=True, kw_only=True)
class RayBudget(Record):
    """One tier's culled ray count for the whole pose track, out of `of` (rays x rays)."""

    rays: int
    footprint: int
    of: int | None


@dataclass(frozen=True, kw_only=True)
class RayCulling(Record):
    """The occupancy grid (avatar.occupancy) the tiers cull rays with."""

    file: str
    sha256: str
    opacity: float
    resolution: int
    occupied_fraction: float
    tiers: dict[str, RayBudget]


@dataclass(frozen=True, kw_only=True)
class AvatarManifest(Record):
    format_version: int
    kind: str
    fps: float
    width: int
    height: int
    n_frames: int
    crop: Crop
    camera: Camera
    mel: MelConfig
    audio_window: AudioWindow
    prosody: Prosody
    tiers: dict[str, Tier]
    fusion: str
    model: ModelConfig
    weights_dtype: str
    rgb: str
    training: Training
    av_offset_ms: float  # the A/V offset `ideal prepare` corrected (positive: the audio was late)
    mouth_calibration: MouthCalibration | None = absent()  # None: avatars from before `ideal mouth calibrate`
    consent: Consent
    synthetic_mark: bool
    created: str  # ISO 8601, UTC
    ray_culling: RayCulling | None = absent()  # None: every tier renders every ray


def load_avatar_manifest(directory: str | Path) -> AvatarManifest:
    """Validate an avatar dir (format version, files, manifest keys) and return its manifest."""
    return load_manifest(directory, AVATAR, AvatarManifest, _FIXES)


def write_avatar_manifest(directory: Path, manifest: AvatarManifest) -> Path:
    """Write (or replace, atomically) the avatar.json of `directory`."""
    path = directory / AVATAR.file
    write_manifest(path, manifest.to_dict())
    return path
