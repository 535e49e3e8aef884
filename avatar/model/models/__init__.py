"""Composition of the components into the exportable stages."""

from ideal.avatar.model.models.ideal_nerf import ConditionEncoder, HeadRenderer, IdealNeRF

__all__ = ["ConditionEncoder", "HeadRenderer", "IdealNeRF"]
