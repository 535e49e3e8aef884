"""Held-out evaluation of an avatar: image metrics on the head crop, landmark/AU/pose metrics from the same face
tracker run on rendered and real frames, an ablation avatar and a trivial baseline on the same frames.

Modules: `image_metrics` (L1, PSNR, SSIM), `face_metrics` (LMD, LMDV, AU proxies, Pose-D), `baseline`
(nearest training frame by audio feature), `runner` (one evaluation run), `report` (metrics.json + table),
`video` (side-by-side video), `cli` (`ideal evaluate`).
"""
