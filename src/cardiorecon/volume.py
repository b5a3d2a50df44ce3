"""`Volume` (array + voxel-to-RAS affine) and `Study` (one subject at one visit).

Conventions (DESIGN.md section 3): world coordinates are RAS+ millimetres; the affine maps
voxel indices (i, j, k) to world (x, y, z); data is (X, Y, Z) or (X, Y, Z, T); a LAX view is a
Volume with Z = 1 whose third affine column is its slice normal times its slice thickness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import re
import warnings

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError

#: Label values shared by every reader, the phantom, the segmenter and the metrics.
LABELS: Mapping[str, int] = MappingProxyType(
    {"background": 0, "lv_cavity": 1, "lv_myocardium": 2, "rv_cavity": 3}
)


#: Keys of a LAX view's meta holding its SAX -> LAX phase pairing (one LAX frame index per SAX frame)
#: and the rule that made it; a reader sets them from the view's own ED/ES files, the plan otherwise
#: (`cardiorecon.phase`, `cardiorecon.plan`).
PAIRING = "sax_frame_pairing"
RULE = "sax_frame_pairing_rule"

#: a LAX view whose plane is within this angle of the SAX slices' is refused (it cuts no slice)
LAX_MIN_ANGLE_DEG = 5.0


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
        if data.dtype.kind not in "biuf":
            raise InputError(source, f"image data must be numbers, got dtype {data.dtype}")
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            bad = int(data.size - np.count_nonzero(np.isfinite(data)))
            raise InputError(source, f"{bad} voxel(s) are NaN or infinite")
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
        for t, what in ((self.ed_frame, "ED"), (self.es_frame, "ES")):
            if t is not None and (isinstance(t, bool) or not isinstance(t, (int, np.integer))):
                raise InputError(source, f"{what} frame must be a frame index (an integer), got {t!r}")
        if self.sax.data.ndim != 4:
            raise InputError(source, f"the SAX cine must be 4D (X, Y, Z, T), got shape {self.sax.shape}")
        if self.sax.spatial_shape[2] < 2:
            raise InputError(source, f"the SAX stack needs at least 2 slices, got shape {self.sax.shape}")
        if float(np.ptp(self.sax.data)) == 0.0:
            raise InputError(source, f"the SAX image is constant ({self.sax.data.flat[0]!r} everywhere): nothing to "
                                     "reconstruct or segment")
        self.lax, self.lax_labels = dict(self.lax), dict(self.lax_labels)
        self._drop_lax_without_geometry()
        for name, view in self.lax.items():
            if view.spatial_shape[2] != 1:
                raise InputError(view.meta.get("source"), f"LAX view {name!r} must have one slice, got shape {view.shape}")
            angle = float(np.degrees(np.arccos(min(1.0, abs(float(view.slice_normal @ self.sax.slice_normal))))))
            if angle < LAX_MIN_ANGLE_DEG:
                raise InputError(view.meta.get("source"), f"LAX view {name!r} is parallel to the SAX slices ({angle:.1f} "
                                                          "degrees apart): it is not a long-axis view")
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
        if self.ed_frame is None and self.es_frame is None and self.sax.num_frames == 1:
            self.ed_frame = 0  # a one-frame study (a 3D NIfTI, one DICOM phase) is its own ED, unless known as ES

    def _drop_lax_without_geometry(self) -> None:
        """LAX views guide only through their position relative to the SAX stack: a view (or a SAX
        stack) read from a NIfTI whose sform and qform codes are both 0 has no known position, so the
        view is dropped here, with a warning naming the file, instead of guiding from a guessed place."""
        sax_unknown = self.sax.meta.get("geometry") == "none"
        dropped = {}
        for name, view in list(self.lax.items()):
            if sax_unknown or view.meta.get("geometry") == "none":
                dropped[name] = view.meta.get("source")
                del self.lax[name]
                self.lax_labels.pop(name, None)
        for name, src in dropped.items():
            why = (f"the SAX image {self.sax.meta.get('source')} has no sform/qform code" if sax_unknown
                   else "it has no sform/qform code")
            warnings.warn(f"{src}: LAX view {name!r} not used: {why}, so its position relative to the SAX stack is "
                          "unknown", GeometryWarning, stacklevel=3)
        if dropped:
            self.meta.setdefault("dropped_lax", {}).update({n: "no sform/qform code" for n in dropped})

    @property
    def num_frames(self) -> int:
        return self.sax.num_frames

    def resolve_frames(self, frames: str | int | list[int | str]) -> list[int]:
        """Frame selection, the same in every command: 'ed', 'es', 'all', a frame index (from 0), or a
        list of them ('ed,es', '0,5,10', 'ed,3'), or their text form. Negative indices are refused (no
        silent 'last frame'); a repeated frame is used once. Raises FrameSelectionError naming the study."""
        source = self.meta.get("source", self.sax.meta.get("source"))
        if isinstance(frames, str):
            frames = parse_frames(frames)
        if isinstance(frames, str) and frames == "all":
            return list(range(self.num_frames))
        if isinstance(frames, (str, int, np.integer)) and not isinstance(frames, bool):
            frames = [frames]
        try:
            items = list(frames)
        except TypeError:
            raise FrameSelectionError(source, f"frames must be ed, es, all or frame indices, got {frames!r}") from None
        out: list[int] = []
        for t in items:
            if isinstance(t, str) and t.strip().lower() in ("ed", "es"):
                key = t.strip().lower()
                t = self.ed_frame if key == "ed" else self.es_frame
                if t is None:
                    raise FrameSelectionError(source, f"{key.upper()} frame unknown for this study; give a frame "
                                                      "index")
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise FrameSelectionError(source, f"frame {t!r} is not an integer index")
            if t < 0:
                raise FrameSelectionError(source, f"frame {int(t)}: frames count from 0 (negative indices are not "
                                                  "accepted)")
            if t >= self.num_frames:
                raise FrameSelectionError(source, f"frame {int(t)} outside 0..{self.num_frames - 1} "
                                                  f"(this study has {self.num_frames} frame(s))")
            if int(t) not in out:
                out.append(int(t))
        if not out:
            raise FrameSelectionError(source, "no frame selected")
        return out


class FrameSelectionError(InputError, ValueError):
    """A --frames (or --factor) value that does not fit this study (also a ValueError, as before)."""


def parse_frames(text: str) -> str | int | list[int | str]:
    """Parse a --frames value, the same in every command: 'ed', 'es', 'all' (any case), a frame index
    from 0 ('3'), or a comma-separated list of indices and ed/es ('ed,es', '0,5,10'). Raises
    FrameSelectionError otherwise (a negative index included: it would silently mean 'from the end')."""
    if not isinstance(text, str):
        raise FrameSelectionError(None, f"--frames expects text, got {text!r}")
    key = text.strip().lower()
    if key == "all":
        return key
    parts = [p.strip() for p in key.split(",")]
    bad = [p for p in parts if p not in ("ed", "es") and not re.fullmatch(r"[+-]?[0-9]{1,9}", p)]
    if not parts or bad or (len(parts) > 1 and "all" in parts):
        raise FrameSelectionError(None, f"--frames must be ed, es, all, a frame index from 0, or a list like ed,es "
                                        f"or 0,5; got {text!r}")
    negative = [p for p in parts if p.startswith("-") and p != "-0"]
    if negative:
        raise FrameSelectionError(None, f"--frames {text!r}: frame {negative[0]}: frames count from 0 (negative "
                                        "indices are not accepted)")
    values: list[int | str] = [p if p in ("ed", "es") else int(p) for p in parts]
    return values[0] if len(values) == 1 else values