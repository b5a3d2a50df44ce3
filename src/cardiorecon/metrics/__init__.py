"""Metrics: image quality, overlap, surface distance and ventricular function (spacing in mm explicit)."""

from cardiorecon.metrics.image import masked_ncc, psnr, ssim
from cardiorecon.metrics.function import curve_rms, function_from_curves, second_difference_rms, volume_curves
from cardiorecon.metrics.seg import (MYOCARDIAL_DENSITY_G_PER_ML, STRUCTURES, ImageMetric, SegmentationMetric, dice,
                                     ejection_fraction, hd95, myocardial_mass_g, segmentation_scores,
                                     ventricular_function, volume_ml)

__all__ = ["MYOCARDIAL_DENSITY_G_PER_ML", "STRUCTURES", "ImageMetric", "SegmentationMetric", "curve_rms", "dice",
           "ejection_fraction", "function_from_curves", "hd95", "masked_ncc", "myocardial_mass_g", "psnr",
           "second_difference_rms", "segmentation_scores", "ssim", "ventricular_function", "volume_curves",
           "volume_ml"]
