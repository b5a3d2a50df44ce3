"""Overlap, surface distance and function from label maps, with the voxel spacing in mm explicit.

HD95 follows MONAI's `compute_hausdorff_distance(percentile=95)`: surface voxels are the mask minus
its erosion (face connectivity, scipy's default, as MONAI and medpy), the distance of every surface voxel of one mask to the nearest
surface voxel of the other is taken in mm (exact Euclidean distance transform with the voxel
spacing), and HD95 = max(95th percentile of A->B, 95th percentile of B->A). It is written here on
scipy's distance transform rather than by calling MONAI because MONAI returns NaN/inf with a warning
for empty masks, and the evaluation needs a defined value there (tests check one case against MONAI).

Empty masks (issue 29): a score needs something to score. Both empty -> Dice and HD95 NaN (undefined:
agreeing on an absence is not an overlap of 1, and averaging it in flatters every method); one empty ->
Dice 0 (a miss counts against the method) and HD95 NaN (no surface to measure from, where a made-up
"worst distance" of the image diagonal would dominate any mean). Means skip NaN; `overlap_scores` says
which case a pair is, so that reports list empty cases apart instead of averaging them silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from cardiorecon.volume import LABELS

#: Structures scored by default: label value by name.
STRUCTURES: Mapping[str, int] = {k: v for k, v in LABELS.items() if v}


def _spacing(spacing: Sequence[float] | float, ndim: int) -> np.ndarray:
    s = np.broadcast_to(np.asarray(spacing, np.float64), (ndim,)).copy()
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"voxel spacing must be positive and finite, got {spacing}")
    return s


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN (undefined) when both are empty, 0 when one is."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    denom = int(p.sum()) + int(r.sum())
    return float("nan") if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of `pred` to the surface of `ref`, and back."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    s = _spacing(spacing, p.ndim)
    sp, sr = _surface(p), _surface(r)
    d_to_r = ndimage.distance_transform_edt(~sr, sampling=s)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=s)
    return d_to_r[sp], d_to_p[sr]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) of two boolean masks; NaN when either is empty
    (see module notes)."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    s = _spacing(spacing, p.ndim)
    if not p.any() or not r.any():
        return float("nan")  # no surface on one side: undefined (module notes)
    a, b = surface_distances(p, r, s)
    return float(max(np.percentile(a, 95), np.percentile(b, 95)))


def volume_ml(labels: np.ndarray, label: int, spacing: Sequence[float] | float) -> float:
    """Volume (mL) of `label` in a 3D label map with voxel spacing (mm)."""
    lab = np.asarray(labels)
    s = _spacing(spacing, 3)
    return float(np.count_nonzero(lab == label) * np.prod(s) / 1000.0)


#: Myocardial tissue density (g/mL) for LV mass, the value used in cardiac MR volumetry.
MYOCARDIAL_DENSITY_G_PER_ML = 1.05


def myocardial_mass_g(labels: np.ndarray, spacing: Sequence[float] | float,
                      density_g_per_ml: float = MYOCARDIAL_DENSITY_G_PER_ML) -> float:
    """LV myocardial mass (g): LV myocardium volume (label 2, mL) times the tissue density."""
    return density_g_per_ml * volume_ml(labels, LABELS["lv_myocardium"], spacing)


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """EF in percent; NaN when the end-diastolic volume is zero."""
    return float("nan") if edv_ml <= 0 else 100.0 * (edv_ml - esv_ml) / edv_ml


def ventricular_function(ed_labels: np.ndarray, es_labels: np.ndarray, spacing: Sequence[float] | float
                         ) -> dict[str, float]:
    """LV and RV EDV/ESV (mL) and EF (%) from ED and ES label maps (LV cavity 1, RV cavity 3)."""
    out = {}
    for name, label in (("lv", LABELS["lv_cavity"]), ("rv", LABELS["rv_cavity"])):
        edv, esv = volume_ml(ed_labels, label, spacing), volume_ml(es_labels, label, spacing)
        out.update({f"{name}_edv_ml": edv, f"{name}_esv_ml": esv, f"{name}_ef": ejection_fraction(edv, esv)})
    return out


#: What `overlap_scores` says about a pair with an empty side (the `note` of an evaluation row).
EMPTY_PREDICTION = "empty prediction"
EMPTY_REFERENCE = "empty reference"
ABSENT_FROM_BOTH = "absent from both"
EMPTY_KINDS = (EMPTY_PREDICTION, EMPTY_REFERENCE, ABSENT_FROM_BOTH)


def overlap_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float) -> tuple[float, float, str]:
    """(Dice, HD95 mm, empty) of two boolean masks: `empty` is "" when both hold voxels, else one of
    EMPTY_KINDS (Dice 0 and HD95 NaN for one empty side, both NaN for two)."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    has_p, has_r = bool(p.any()), bool(r.any())
    empty = "" if has_p and has_r else (ABSENT_FROM_BOTH if not (has_p or has_r) else
                                         EMPTY_PREDICTION if not has_p else EMPTY_REFERENCE)
    return dice(p, r), hd95(p, r, spacing), empty


def segmentation_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float,
                        structures: Mapping[str, int] = STRUCTURES) -> dict[str, dict[str, float]]:
    """Dice and HD95 (mm) per structure of two label maps."""
    return {name: {"dice": dice(pred == v, ref == v), "hd95": hd95(pred == v, ref == v, spacing)}
            for name, v in structures.items()}


@dataclass
class SegmentationMetric:
    """Accumulates Dice and HD95 per structure over cases; `summary()` gives mean and std."""

    structures: Mapping[str, int] = field(default_factory=lambda: dict(STRUCTURES))
    scores: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def update(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float) -> dict:
        s = segmentation_scores(pred, ref, spacing, self.structures)
        self.scores.append(s)
        return s

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        return {name: {m: _mean_std(s[name][m] for s in self.scores) for m in ("dice", "hd95")}
                for name in self.structures}


@dataclass
class ImageMetric:
    """Accumulates PSNR and SSIM over cases (arrays on a common intensity range)."""

    data_range: float
    scores: list[dict[str, float]] = field(default_factory=list)

    def update(self, pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        from cardiorecon.metrics.image import psnr, ssim

        s = {"psnr": psnr(pred, ref, self.data_range), "ssim": ssim(pred, ref, self.data_range)}
        self.scores.append(s)
        return s

    def summary(self) -> dict[str, tuple[float, float]]:
        return {m: _mean_std(s[m] for s in self.scores) for m in ("psnr", "ssim")}


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(values), np.float64)
    v = v[np.isfinite(v)]
    return (float("nan"), float("nan")) if v.size == 0 else (float(v.mean()), float(v.std()))
