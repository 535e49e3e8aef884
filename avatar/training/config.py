"""Training settings: one dataclass (recorded in avatar.json `training.config`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrainConfig:
    steps: int = 20000  # upper bound; `minutes` usually ends training first
    minutes: float | None = None  # wall-clock budget for the optimisation loop
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # None = auto (1 when the machine is already busy, else up to 2)
    fusion: str = "eaa"
    output_size: int | None = None  # tier output S; None = from the crop size (multiple of 128, 256..512)
    # Many frames with few rays each: every step sees many expressions, which is what teaches the field to
    # follow them (4 frames x 512 rays learnt the mean face and almost ignored the mouth input).
    batch_frames: int = 12
    rays_per_frame: int = 192  # random rays (importance-sampled inside the head and at the mouth)
    patch_frames: int = 4  # frames per step that also get a refiner patch per tier
    patch_rays: dict | None = None  # tier -> patch side in rays for the refiner loss; None = defaults
    audio_dropout: float = 0.0  # probability of replacing a frame's audio window by silence in training
    lr: float = 2e-3
    lr_planes: float = 2e-2
    lr_final_fraction: float = 0.1
    w_opacity: float = 0.3
    w_tv: float = 1e-3
    head_weight: float = 6.0  # ray sampling weight inside the (dilated) head mask, over 1 elsewhere
    mouth_weight: float = 20.0  # extra sampling weight around the mouth
    eye_weight: float = 0.0  # extra sampling weight around each eye (lids: blinks and the blink AU)
    checkpoint_every: int = 500
    eval_every: int = 500
    eval_frames: int = 8
    max_frames: int | None = None  # use only the first N frames of the dataset (tests)
    init_from: str | None = None  # avatar dir whose weights this run started from (fine-tuning)

    def to_dict(self) -> dict:
        return asdict(self)

    def patch_sides(self) -> dict[str, int]:
        return self.patch_rays or {"fast": 8, "coarse": 12, "refined": 16}
