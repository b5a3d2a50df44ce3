"""Metrics: image quality (and, with the evaluation issue, overlap, surface distance, function)."""

from cardiorecon.metrics.image import psnr, ssim

__all__ = ["psnr", "ssim"]
