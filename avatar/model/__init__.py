"""IDEAL-NeRF, nerfstudio-style.

- `fields/`      what is in space: the tri-plane radiance field of one identity in canonical head space.
- `components/`  how it is conditioned, sampled and rendered: ray generation, samplers, volume renderer,
                 audio/expression encoders, the EAA-Module (self-attention fusion), the GA-Module (attention
                 aggregation of the aligned representation into the field), the refiner, losses, prosody.
- `models/`      composition into the three exportable stages: ConditionEncoder, HeadRenderer (one per tier),
                 Refiner; and `IdealNeRF`, which owns all their weights.
"""

from ideal.avatar.model.config import ModelConfig, default_tiers

__all__ = ["ModelConfig", "default_tiers"]
