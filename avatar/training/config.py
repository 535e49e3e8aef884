"""Training settings: one dataclass (recorded in avatar.json `training.config`). The fields with a help text are
`ideal train`'s options (ideal/configcli.py derives them); named presets of it are in recipes.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from ideal.avatar.errors import InputError


@dataclass
class TrainConfig:
    # upper bound; `minutes` usually ends training first. It also sets the learning-rate schedule's length
    # (progress = the larger of steps and minutes spent), so recipes keep it at 20000 when they set minutes.
    steps: int = field(default=20000, metadata={"help": "maximum optimisation steps"})
    minutes: float | None = field(default=None, metadata={"help": "wall-clock training budget (none: --steps only)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads (none: auto, 1 on a busy machine)"})
    fusion: Literal["eaa", "concat"] = field(default="eaa", metadata={
        "help": "eaa: self-attention alignment (the paper); concat: plain concatenation (ablation)"})
    output_size: int | None = field(default=None, metadata={
        "help": "crop render size S (multiple of 128; none: from the crop size, 256..512)"})
    # Many frames with few rays each: every step sees many expressions, which is what teaches the field to
    # follow them (4 frames x 512 rays learnt the mean face and almost ignored the mouth input).
    batch_frames: int = 12
    rays_per_frame: int = 192  # random rays (importance-sampled inside the head and at the mouth)
    patch_frames: int = 4  # frames per step that also get a refiner patch per tier
    patch_rays: dict | None = None  # tier -> patch side in rays for the refiner loss; None = defaults
    audio_dropout: float = field(default=0.0, metadata={
        "help": "probability of silencing a frame's audio window in training, so the lips follow the "
                "expression's mouth slice (e.g. 0.85)"})
    lr: float = 2e-3
    lr_planes: float = 2e-2
    lr_final_fraction: float = 0.1
    w_opacity: float = 0.3
    w_tv: float = 1e-3
    head_weight: float = 6.0  # ray sampling weight inside the (dilated) head mask, over 1 elsewhere
    mouth_weight: float = field(default=20.0, metadata={
        "help": "extra ray-sampling weight around the mouth (the head has 6)"})
    eye_weight: float = field(default=0.0, metadata={
        "help": "extra ray-sampling weight around each eye: sharper lids, truer blinks"})
    checkpoint_every: int = field(default=500, metadata={"help": "checkpoint every N steps"})
    eval_every: int = field(default=500, metadata={"help": "held-out PSNR every N steps"})
    eval_frames: int = 8
    max_frames: int | None = field(default=None, metadata={
        "help": "use only the first N frames of the dataset (tests)"})
    init_from: str | None = field(default=None, metadata={
        "help": "fine-tune: start from this avatar's weights (trained on the same dataset) with a fresh "
                "optimiser and learning-rate schedule, e.g. with --audio-dropout to strengthen the lips"})
    half: bool = field(default=False, metadata={"help": "store weights as float16 (half the size)"})
    ray_culling: bool = field(default=True, metadata={
        "help": "measure the occupancy grid (~20 s) so tiers render only the rays that can meet the head "
                "(`ideal occupancy AVATAR` adds it later)"})
    recipe: str | None = None  # the named recipe (recipes.py) these settings started from; flags may override it

    def validate(self) -> TrainConfig:
        for name, value, example in (("--mouth-weight", self.mouth_weight, 60), ("--eye-weight", self.eye_weight, 20)):
            if value < 0:
                raise InputError(f"{name} {value:g}: must be >= 0", f"e.g. {name} {example}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def patch_sides(self) -> dict[str, int]:
        return self.patch_rays or {"fast": 8, "coarse": 12, "refined": 16}
