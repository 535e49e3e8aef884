"""What is in space: the identity's tri-plane radiance field in canonical head space."""

from ideal.avatar.model.fields.triplane import TriPlaneField

__all__ = ["TriPlaneField"]
