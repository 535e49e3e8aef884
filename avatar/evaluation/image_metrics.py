"""Image metrics on the head crop: L1, PSNR and SSIM of float images in [0, 1].

The head crop (not the whole frame) is what is compared: a static background copied from the plate would
otherwise inflate every figure. SSIM follows Wang et al. 2004 (Gaussian window sigma 1.5, 11 taps, K1=0.01,
K2=0.03, data range 1), computed per channel and averaged; it is written with scipy's separable Gaussian
filter so no image-quality package is needed.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5 -> the standard 11-tap window
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
    """Structural similarity of two (H, W) or (H, W, C) images, mean over pixels and channels."""
    a, b = _as_float(a), _as_float(b)
    _check(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    vals = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        blur = lambda z: gaussian_filter(z, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        vals.append(np.mean(num / den))
    return float(np.mean(vals))


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
