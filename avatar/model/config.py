"""The model's hyper-parameters, one dataclass, recorded in avatar.json (`model`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ideal.avatar.backend import Tier


def default_tiers(output: int = 256) -> dict[str, Tier]:
    """Fast: 64x64 rays x 6 samples (the step-down tier for a busy CPU: half the field work of coarse).
    Coarse: 64x64 rays x 12 samples (the CPU real-time tier). Refined: 128x128 rays x 16 samples (GPU, or
    offline on CPU). Each has its own learned upsampler to the output size."""
    return {
        "fast": Tier("fast", rays=64, samples=6, output=output, refine=True),
        "coarse": Tier("coarse", rays=64, samples=12, output=output, refine=True),
        "refined": Tier("refined", rays=128, samples=16, output=output, refine=True),
    }


@dataclass
class ModelConfig:
    fusion: str = "eaa"  # "eaa" (self-attention over audio+expression tokens) | "concat" (the paper's ablation)
    # condition encoders
    n_mels: int = 80
    audio_window: int = 16  # mel frames per video frame (AudioWindow.length)
    token_dim: int = 64
    eaa_heads: int = 4
    eaa_layers: int = 2
    # tri-plane field
    plane_res: int = 128
    plane_channels: int = 16
    n_basis: int = 3  # expression basis planes blended by coefficients from the aligned representation
    # GA-Module
    ga_dim: int = 32
    ga_heads: int = 2
    hidden: int = 64
    feat_channels: int = 8  # per-ray features handed to the refiner
    density_scale: float = 10.0
    # canonical head box (units of neutral face height; x right, y down, z away from the camera)
    box_min: tuple[float, float, float] = (-0.8, -1.0, -0.7)
    box_max: tuple[float, float, float] = (0.8, 0.8, 0.9)
    # refiner
    refiner_channels: int = 32
    tiers: dict[str, Tier] = field(default_factory=default_tiers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tiers"] = {k: t.to_dict() for k, t in self.tiers.items()}
        d["box_min"], d["box_max"] = list(self.box_min), list(self.box_max)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d.setdefault("n_basis", 0)  # avatars written before the basis planes existed
        d["tiers"] = {k: Tier.from_dict(t) for k, t in d.get("tiers", {}).items()} or default_tiers()
        d["box_min"], d["box_max"] = tuple(d["box_min"]), tuple(d["box_max"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
