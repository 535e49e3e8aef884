"""`ideal train`: fit an IDEAL-NeRF avatar to a prepared dataset and write the avatar dir."""
