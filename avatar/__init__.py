"""ideal-nerf avatar stage: data preparation, the IDEAL-NeRF model, training and evaluation.

Lower stages never import higher ones: nothing here imports `export`, `streamer` or `server`.
"""
