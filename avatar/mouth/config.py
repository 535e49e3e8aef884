"""The audio-to-mouth model's settings: the network, its training and the retraining pipeline, in one light
module (no torch), so `ideal mouth train` derives its options from them without loading the model code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.mouth.augmentation import AugmentConfig
from ideal.avatar.mouth.features import FeatureSpec

# Chosen by benchmarks/mouth_loso.py (docs/mouth.md): feature kind and window.
DEFAULT_FEATURE = "cepstral"
DEFAULT_WINDOW = AudioWindow(length=24, lookahead_ms=120.0)
# Chosen by benchmarks/mouth_loso.py on 22 speakers: three averaged nets (+0.014 mean LOSO r over one at 120 ms).
DEFAULT_MEMBERS = 3


@dataclass(frozen=True)
class NetConfig:
    channels: int = 64
    hidden: int = 128
    dropout: float = 0.2
    members: int = field(default=1, metadata={
        "help": "ensemble: train this many nets (seeds seed, seed+1, ...) and average them in one module"})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MouthTrainConfig:
    steps: int = field(default=800, metadata={"help": "optimiser steps"})
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-2
    mouth_open_weight: float = 4.0  # mouth_open is what lip-sync is judged on
    feature_mask: int = 10  # SpecAugment-style: mask up to this many feature bins per example
    time_jitter: int = 1  # random shift of the window, in feature hops, against the labels
    seed: int = 0
    # one thread: on a shared, oversubscribed CPU two OpenMP threads measured 5x slower than one
    threads: int = 1
    # "clip": each clip's labels are standardised on its own (then mapped to the pooled scale), so the model
    # does not spend capacity on per-person resting lip gaps it cannot hear; "none": raw expression units
    label_norm: str = "clip"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PipelineConfig:
    spec: FeatureSpec = field(default_factory=lambda: FeatureSpec(DEFAULT_FEATURE))
    window: AudioWindow = DEFAULT_WINDOW
    train: MouthTrainConfig = field(default_factory=MouthTrainConfig)
    net: NetConfig = field(default_factory=lambda: NetConfig(members=DEFAULT_MEMBERS))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    bootstrap_rounds: int = field(default=2, metadata={"help": "rounds of per-clip A/V offset search"})
    # the per-clip quality gate (avatar.mouth.training.ClipGate): thresholds measured in docs/mouth.md
    gate_min_r: float = field(default=0.25, metadata={
        "help": "leave out a clip whose audio-implied and tracked mouth correlate below this at their best offset"})
    gate_min_margin: float = field(default=0.10, metadata={
        "help": "leave out a clip whose best r is not this far above the best r 300 ms or more away from it"})
    # with fewer speakers each clip's judge (a model trained on the others) is too weak to condemn a clip
    gate_min_speakers: int = 4
    loso: bool = field(default=False, metadata={
        "help": "also measure leave-one-speaker-out r (one extra training per speaker: slower)"})
