"""`Volume` (array + voxel-to-RAS affine) and `Study` (one subject at one visit).

Conventions (DESIGN.md section 3): world coordinates are RAS+ millimetres; the affine maps
voxel indices (i, j, k) to world (x, y, z); data is (X, Y, Z) or (X, Y, Z, T); a LAX view is a
Volume with Z = 1 whose third affine column is its slice normal times its slice thickness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from cardiorecon.errors import InputError

#: Label values shared by every reader, the phantom, the segmenter and the metrics.
LABELS: Mapping[str, int] = MappingProxyType(
    {"background": 0, "lv_cavity": 1, "lv_myocardium": 2, "rv_cavity": 3}
)


def check_affine(affine: np.ndarray, source: Any = None) -> np.ndarray:
    """Return `affine` as a float64 (4, 4) array, or raise InputError naming `source`."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise InputError(source, f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(source, "affine contains NaN or infinite values")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise InputError(source, f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    linear = a[:3, :3]
    scale = max(np.abs(linear).max(), 1e-12)
    if abs(np.linalg.det(linear / scale)) < 1e-9:
        raise InputError(source, "affine is singular (voxel axes are degenerate); geometry unknown")
    return a


@dataclass(frozen=True)
class Volume:
    """An image or label map with its geometry.

    Attributes:
        data: array of shape (X, Y, Z) or (X, Y, Z, T).
        affine: (4, 4) float64, voxel index -> RAS+ mm.
        meta: small dict (source path, slice thickness in mm, trigger times, ...).
    """

    data: np.ndarray
    affine: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = self.meta.get("source") if isinstance(self.meta, Mapping) else None
        data = np.asarray(self.data)
        if data.ndim not in (3, 4):
            raise InputError(source, f"a Volume needs 3 or 4 dimensions (X, Y, Z[, T]), got shape {data.shape}")
        if min(data.shape) == 0:
            raise InputError(source, f"empty image, shape {data.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "affine", check_affine(self.affine, source))
        object.__setattr__(self, "meta", dict(self.meta))

    # ----- geometry computed from the affine -----
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])  # type: ignore[return-value]

    @property
    def num_frames(self) -> int:
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def slice_thickness(self) -> float:
        """Slice thickness in mm: from the metadata when known, else the slice spacing."""
        return float(self.meta.get("slice_thickness_mm", self.spacing[2]))

    @property
    def origin(self) -> np.ndarray:
        """World position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        """(3, 3) unit column vectors of the voxel axes in world space."""
        return self.affine[:3, :3] / self.spacing

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit normal of the slices: the in-plane axes' cross product, oriented like axis k."""
        n = np.cross(self.affine[:3, 0], self.affine[:3, 1])
        n /= np.linalg.norm(n)
        if np.dot(n, self.affine[:3, 2]) < 0:
            n = -n
        return n

    @property
    def orientation(self) -> str:
        """Orientation codes as nibabel gives them, e.g. 'RAS' or 'LPI'."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    @property
    def center_world(self) -> np.ndarray:
        """World position (mm) of the centre of the voxel grid."""
        idx = (np.array(self.spatial_shape, dtype=float) - 1) / 2
        return self.affine[:3, :3] @ idx + self.affine[:3, 3]

    def slice_center(self, k: int) -> np.ndarray:
        """World position (mm) of the in-plane centre of slice k."""
        idx = np.array([(self.spatial_shape[0] - 1) / 2, (self.spatial_shape[1] - 1) / 2, k], dtype=float)
        return self.affine[:3, :3] @ idx + self.affine[:3, 3]

    # ----- derived volumes -----
    def with_data(self, data: np.ndarray, **meta: Any) -> "Volume":
        """Same geometry, new data (same spatial shape); meta updated with `meta`."""
        data = np.asarray(data)
        if data.shape[:3] != self.spatial_shape:
            raise ValueError(f"spatial shape {data.shape[:3]} differs from {self.spatial_shape}")
        return Volume(data, self.affine, {**self.meta, **meta})

    def frame(self, t: int) -> "Volume":
        """The 3D volume of frame t (a 3D volume returns itself for t = 0)."""
        if self.data.ndim == 3:
            if t != 0:
                raise IndexError(f"frame {t} requested from a 3D volume")
            return self
        return Volume(self.data[..., t], self.affine, dict(self.meta))

    def slices(self, ks: np.ndarray | list[int]) -> "Volume":
        """Keep slices `ks`, which must be evenly spaced and increasing (e.g. every other one)."""
        ks = np.asarray(ks, dtype=int)
        steps = np.diff(ks)
        if ks.size > 1 and (np.any(steps <= 0) or np.any(steps != steps[0])):
            raise ValueError(f"slices must be evenly spaced and increasing, got {ks.tolist()}")
        step = int(steps[0]) if ks.size > 1 else 1
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([0, 0, ks[0]]) + self.affine[:3, 3]
        affine[:3, 2] *= step
        return Volume(self.data[:, :, ks], affine, dict(self.meta))


@dataclass
class Study:
    """One subject at one visit.

    Attributes:
        sax: SAX cine, data (X, Y, Z, T).
        lax: LAX views by name ("2ch", "3ch", "4ch", ...), each (X, Y, 1, T).
        sax_labels: optional label map on the SAX grid, (X, Y, Z) or (X, Y, Z, T).
        lax_labels: optional label maps on the LAX grids, by view name.
        ed_frame, es_frame: frame indices of end-diastole and end-systole when known.
        meta: source paths, subject id, annotation masks, ...
    """

    sax: Volume
    lax: dict[str, Volume] = field(default_factory=dict)
    sax_labels: Volume | None = None
    lax_labels: dict[str, Volume] = field(default_factory=dict)
    ed_frame: int | None = None
    es_frame: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = self.sax.meta.get("source")
        if self.sax.data.ndim != 4:
            raise InputError(source, f"the SAX cine must be 4D (X, Y, Z, T), got shape {self.sax.shape}")
        if self.sax.spatial_shape[2] < 2:
            raise InputError(source, f"the SAX stack needs at least 2 slices, got shape {self.sax.shape}")
        for name, view in self.lax.items():
            if view.spatial_shape[2] != 1:
                raise InputError(view.meta.get("source"), f"LAX view {name!r} must have one slice, got shape {view.shape}")
        if self.sax_labels is not None and self.sax_labels.spatial_shape != self.sax.spatial_shape:
            raise InputError(
                self.sax_labels.meta.get("source"),
                f"label map shape {self.sax_labels.shape} does not match the SAX image {self.sax.shape}",
            )
        if self.sax_labels is not None and not np.allclose(self.sax_labels.affine, self.sax.affine, atol=1e-3):
            raise InputError(self.sax_labels.meta.get("source"), "label map affine differs from the SAX image's")
        for t, what in ((self.ed_frame, "ED"), (self.es_frame, "ES")):
            if t is not None and not 0 <= t < self.sax.num_frames:
                raise InputError(source, f"{what} frame {t} outside 0..{self.sax.num_frames - 1}")

    @property
    def num_frames(self) -> int:
        return self.sax.num_frames

    def resolve_frames(self, frames: str | int | list[int]) -> list[int]:
        """Frame selection: 'ed', 'es', 'all', an index, or a list of indices."""
        if isinstance(frames, str):
            key = frames.lower()
            if key == "all":
                return list(range(self.num_frames))
            if key in ("ed", "es"):
                t = self.ed_frame if key == "ed" else self.es_frame
                if t is None:
                    raise InputError(self.sax.meta.get("source"), f"{key.upper()} frame unknown for this study")
                return [t]
            if key.lstrip("-").isdigit():
                frames = int(key)
            else:
                raise ValueError(f"frames must be ed, es, all or an index, got {frames!r}")
        if isinstance(frames, int):
            frames = [frames]
        out = [int(t) % self.num_frames if t < 0 else int(t) for t in frames]
        for t in out:
            if not 0 <= t < self.num_frames:
                raise ValueError(f"frame {t} outside 0..{self.num_frames - 1}")
        return out
