"""Pre-processing of DESIGN.md section 4: intensity normalisation, the heart centre, and the
model grid (in-plane resample to the model's pixel spacing, square crop around the heart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cardiorecon.geometry import (line_plane_intersection, plane_intersection, resample_inplane, slice_plane,
                                  voxel_to_world, world_to_voxel)
from cardiorecon.volume import Study, Volume

Normalisation = Literal["percentile", "zscore", "minmax"]


@dataclass(frozen=True)
class IntensityMap:
    """x_model = clip((x - offset) / scale, -1, 1) and back: x = x_model * scale + offset."""

    offset: float
    scale: float

    def forward(self, data: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(data, dtype=np.float32) - self.offset) / self.scale, -1, 1)

    def inverse(self, data: np.ndarray) -> np.ndarray:
        return np.asarray(data, dtype=np.float32) * self.scale + self.offset


def intensity_map(data: np.ndarray, method: Normalisation = "percentile", low: float = 1.0,
                  high: float = 99.0) -> IntensityMap:
    """The map taking `data` to [-1, 1]: percentiles low..high (default), 3 std (zscore), or min..max."""
    d = np.asarray(data, dtype=np.float64)
    if method == "percentile":
        lo, hi = np.percentile(d, [low, high])
    elif method == "minmax":
        lo, hi = float(d.min()), float(d.max())
    elif method == "zscore":
        mu, sd = float(d.mean()), float(d.std())
        lo, hi = mu - 3 * sd, mu + 3 * sd
    else:
        raise ValueError(f"unknown normalisation {method!r}")
    if hi <= lo:
        hi = lo + 1.0
    return IntensityMap(offset=float((hi + lo) / 2), scale=float((hi - lo) / 2))


def _lax_pairs(study: Study):
    names = [n for n in ("2ch", "4ch", "3ch") if n in study.lax] + \
        [n for n in study.lax if n not in ("2ch", "3ch", "4ch")]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            try:
                yield plane_intersection(slice_plane(study.lax[a]), slice_plane(study.lax[b]))
            except ValueError:
                continue


def _inside_sax(study: Study, point: np.ndarray) -> bool:
    ijk = world_to_voxel(study.sax.affine, point)
    X, Y = study.sax.spatial_shape[:2]
    return bool(0 <= ijk[0] <= X - 1 and 0 <= ijk[1] <= Y - 1)


def long_axis(study: Study) -> tuple[np.ndarray, np.ndarray] | None:
    """The LV long axis: the intersection line of two LAX planes (2ch and 4ch preferred) that
    crosses the SAX field of view at the mid slice."""
    sax = study.sax
    mid = slice_plane(sax, (sax.spatial_shape[2] - 1) / 2)
    for point, direction in _lax_pairs(study):
        try:
            if _inside_sax(study, line_plane_intersection(point, direction, mid)):
                return point, direction
        except ValueError:
            continue
    return None


def heart_centre(study: Study) -> tuple[np.ndarray, str]:
    """World point (mm) to centre crops on, and where it came from: the LAX long axis crossing the
    mid SAX plane (inside the SAX field of view), else the centroid of the LV labels, else the
    SAX stack centre."""
    sax = study.sax
    mid = slice_plane(sax, (sax.spatial_shape[2] - 1) / 2)
    axis = long_axis(study)
    if axis is not None:
        return line_plane_intersection(axis[0], axis[1], mid), "lax"
    if study.sax_labels is not None:
        lab = study.sax_labels.data
        lv = np.argwhere(np.isin(lab, (1, 2)))
        if len(lv):
            centre = voxel_to_world(sax.affine, lv[:, :3].mean(axis=0))
            return centre - mid.signed_distance(centre) * mid.normal, "labels"
    return sax.center_world, "image centre"


def to_model_grid(volume: Volume, spacing_mm: float, size: int, centre: np.ndarray, labels: bool = False) -> Volume:
    """Resample a SAX volume in-plane to `spacing_mm` and crop size x size around `centre`."""
    return resample_inplane(volume, spacing_mm, size, centre, order=0 if labels else 1)
