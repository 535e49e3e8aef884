"""Image metrics on the head crop: L1, PSNR and SSIM of float images in [0, 1].

The head crop (not the whole frame) is what is compared: a static background copied from the plate would
otherwise inflate every figure. SSIM follows Wang et al. 2004 (Gaussian window sigma 1.5, 11 taps, K1=0.01,
K2=0.03, data range 1) as scikit-image computes it, averaged over every pixel and channel.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

SSIM_SIGMA = 1.5  # scikit-image truncates the Gaussian at 3.5 sigma: the standard 11-tap window
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_CAP_DB = 100.0  # identical images: reported as this instead of +inf so means stay finite


def _as_float(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error of two (H, W, C) images (uint8 or float in [0, 1]), on the [0, 1] scale."""
    a, b = _as_float(a), _as_float(b)
    _check(a, b)
    return float(np.mean(np.abs(a - b)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0), capped at PSNR_CAP_DB for identical images."""
    a, b = _as_float(a), _as_float(b)
    _check(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return float(-10.0 * np.log10(mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two (H, W) or (H, W, C) images (at least 11 px a side), mean over pixels and
    channels.

    The mean of scikit-image's full SSIM map, not its own mean: that one leaves out a 5-pixel border, which
    moves the figure by up to 0.04 on 128-256 px crops of real frames; every SSIM this project has reported
    includes the border (the full-map mean matches them to 1e-15)."""
    a, b = _as_float(a), _as_float(b)
    _check(a, b)
    _, ssim_map = structural_similarity(a, b, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
                                        K1=SSIM_K1, K2=SSIM_K2, data_range=1.0,
                                        channel_axis=-1 if a.ndim == 3 else None, full=True)
    return float(np.mean(ssim_map))


def face_alpha(alpha: np.ndarray) -> float:
    """Mean opacity over the central face region of render crops (B, S, S, 1): near 1 when the head is rendered,
    which a comparison of two renders needs to mean anything (not the plate showing through)."""
    s = alpha.shape[1]
    return float(alpha[:, int(0.35 * s):int(0.7 * s), int(0.3 * s):int(0.7 * s)].mean())


def crop(img: np.ndarray, box: tuple[int, int, int, int] | np.ndarray) -> np.ndarray:
    """The (x0, y0, x1, y1) region of an (H, W, C) frame, clipped to the frame."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = img.shape[:2]
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop box {tuple(box)} is empty inside a {w}x{h} frame")
    return img[y0:y1, x0:x1]


def image_metrics(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """{"l1", "psnr", "ssim"} of one pair of head crops."""
    return {"l1": l1(real, fake), "psnr": psnr(real, fake), "ssim": ssim(real, fake)}


def head_crop_metrics(real: np.ndarray, fake: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, float]:
    """L1/PSNR/SSIM on the head box of one pair of render crops (S, S, 3): the head-crop figures.

    This is the one definition of "head-crop" image quality: `ideal evaluate` and the trainer's held-out log
    both use it (the render crop itself may be the whole frame, whose static background inflates figures)."""
    return image_metrics(crop(real, box), crop(fake, box))
