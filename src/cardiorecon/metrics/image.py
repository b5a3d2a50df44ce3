"""Image quality: PSNR and SSIM (2D, per slice, averaged) with an explicit data range."""

from __future__ import annotations

import numpy as np


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio (dB) of `pred` against `ref` over all voxels."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(ref, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Mean SSIM over the 2D slices of (X, Y[, N]) arrays (scikit-image, 7x7 window, Gaussian off)."""
    from skimage.metrics import structural_similarity

    p, r = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    if p.ndim == 2:
        p, r = p[..., None], r[..., None]
    p, r = p.reshape(p.shape[0], p.shape[1], -1), r.reshape(r.shape[0], r.shape[1], -1)
    return float(np.mean([structural_similarity(p[..., i], r[..., i], data_range=data_range)
                          for i in range(p.shape[-1])]))


def masked_ncc(a, b, mask) -> float:
    """Normalised cross-correlation of a and b inside mask (nan-free: 0 where undefined)."""
    a, b, m = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x) for x in (a, b, mask))
    m = m.astype(bool)
    if m.sum() < 2:
        return 0.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map inside `mask` after matching a's intensities to b's there."""
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    m = mask.astype(bool)
    if m.sum() < 50:
        return float("nan")
    x, y = a.astype(np.float64), b.astype(np.float64)
    A = np.stack([x[m], np.ones(m.sum())], 1)
    coef, *_ = np.linalg.lstsq(A, y[m], rcond=None)
    x = x * coef[0] + coef[1]
    lo, hi = np.percentile(y[m], [1, 99])
    rng = max(hi - lo, 1e-6)
    _, smap = structural_similarity(x, y, data_range=rng, full=True)
    inner = ndimage.binary_erosion(m, iterations=3)
    return float(smap[inner if inner.any() else m].mean())
