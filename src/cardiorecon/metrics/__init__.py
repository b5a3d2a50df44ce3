"""Metrics: image quality, overlap, surface distance and ventricular function (spacing in mm explicit)."""

from cardiorecon.metrics.image import masked_ncc, psnr, ssim
from cardiorecon.metrics.seg import (STRUCTURES, ImageMetric, SegmentationMetric, dice, ejection_fraction, hd95,
                                     segmentation_scores, ventricular_function, volume_ml)

__all__ = ["STRUCTURES", "ImageMetric", "SegmentationMetric", "dice", "ejection_fraction", "hd95", "masked_ncc",
           "psnr", "segmentation_scores", "ssim", "ventricular_function", "volume_ml"]
