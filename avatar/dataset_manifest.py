"""The dataset dir's manifest (`dataset.json`, written by `ideal prepare`) as a typed record.

Sections code reads are typed; the purely descriptive ones (file patterns, settings, tool versions,
statistics) are kept as the JSON they are. docs/formats.md says what each key means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ideal.avatar.manifest import DATASET, load_manifest, write_manifest
from ideal.avatar.records import Json, Record, absent


@dataclass(frozen=True, kw_only=True)
class Camera(Record):
    """How pose and canonical space are defined (weak perspective; the strings are for the reader)."""

    model: str
    width: int
    height: int
    pose_convention: str
    canonical_unit: str
    canonical_origin: str
    pose_solver: str


@dataclass(frozen=True, kw_only=True)
class Crop(Record):
    """The fixed square crop of the full frames the avatar renders, in full-frame pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    size: int
    contains_all_boxes: bool | None = absent()  # datasets only: whether every frame's head box fits

    @property
    def box(self) -> tuple[float, float, float]:
        """(x0, y0, side): the form the model, the trainer and the compositor take."""
        return float(self.x0), float(self.y0), float(self.size)


@dataclass(frozen=True, kw_only=True)
class Split(Record):
    """Frame ranges [start, stop) of the training and the held-out frames."""

    train: tuple[int, int]
    val: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class DatasetAudio(Record):
    """audio.wav and how it was fitted to the frames (avatar.prepare.audio.AudioFit), A/V offset included."""

    file: str
    sample_rate: int
    channels: int
    mel: Json  # the MelConfig mel.npy was computed with (training recomputes it with the current one)
    mel_frames: int
    source: str
    n_samples: int
    padded_samples: int
    trimmed_samples: int
    start_padded: int
    start_trimmed: int
    end_padded: int
    end_trimmed: int
    av_offset_ms: float  # positive: the audio was late and has been moved earlier
    av_offset_method: str
    av_offset_confidence: float | None
    av_offset_estimated_ms: float | None


@dataclass(frozen=True, kw_only=True)
class Faces(Record):
    detected: int
    interpolated: int
    detected_fraction: float
    interpolated_ranges_s: list[tuple[float, float]]
    second_face_frames: int


@dataclass(frozen=True, kw_only=True)
class Source(Record):
    """The clip the dataset was prepared from."""

    path: str
    sha256: str
    audio_path: str | None
    audio_sha256: str | None
    source_fps: float
    codec: str
    start_s: float
    duration_s: float | None


@dataclass(frozen=True, kw_only=True)
class DatasetManifest(Record):
    format_version: int
    fps: float
    width: int
    height: int
    n_frames: int
    duration_s: float
    camera: Camera
    audio: DatasetAudio
    split: Split
    crop: Crop
    faces: Faces
    frames: Json  # {"dir", "pattern", "jpeg_quality"}
    masks: Json  # {"dir", "pattern", "labels"}
    source: Source
    settings: Json  # the PrepareConfig sections it was prepared with
    tools: Json  # package versions
    stats: Json  # tracking, pose jitter, background and timing figures


def load_dataset_manifest(directory: str | Path) -> DatasetManifest:
    """Validate a dataset dir (format version, files, manifest keys) and return its manifest."""
    return load_manifest(directory, DATASET, DatasetManifest)


def write_dataset_manifest(directory: Path, manifest: DatasetManifest) -> None:
    write_manifest(directory / DATASET.file, manifest.to_dict())
