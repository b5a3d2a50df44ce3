"""A folder of DICOM cine series -> Study (pydicom reads the files).

Slices are grouped into planes (series, orientation, position), planes into stacks of parallel
planes; the largest stack is the SAX cine, every other plane a LAX view. Frames are ordered by
trigger time. DICOM patient coordinates are LPS; the affines returned are RAS (x and y flipped).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiorecon.errors import InputError
from cardiorecon.geometry import LPS_TO_RAS
from cardiorecon.io.nifti import register_input
from cardiorecon.volume import Study, Volume

# Normals within this angle count as parallel (one stack).
PARALLEL_TOLERANCE_DEG = 5.0


@dataclass
class _Plane:
    series_uid: str
    description: str
    row_cos: np.ndarray  # direction of increasing column index (LPS)
    col_cos: np.ndarray  # direction of increasing row index (LPS)
    position: np.ndarray  # ImagePositionPatient of the first pixel (LPS)
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    thickness: float
    series_number: int
    files: list[tuple[float, int, Path]] = field(default_factory=list)  # (trigger ms, instance, path)

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_cos, self.col_cos)
        return n / np.linalg.norm(n)

    def sorted_files(self) -> list[Path]:
        return [p for _, _, p in sorted(self.files, key=lambda f: (f[0], f[1]))]

    def trigger_times(self) -> list[float]:
        return sorted(f[0] for f in self.files)


def _read_headers(folder: Path) -> list[tuple[Path, object]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    # Real scanners write UIDs with leading zeros etc.; the values are still usable.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        if not hasattr(ds, "ImageOrientationPatient") or not hasattr(ds, "ImagePositionPatient"):
            continue
        out.append((path, ds))
    return out


def _planes(headers: list[tuple[Path, object]]) -> list[_Plane]:
    planes: dict[tuple, _Plane] = {}
    for path, ds in headers:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        key = (uid, tuple(np.round(iop, 3)), tuple(np.round(ipp, 1)))
        if key not in planes:
            spacing = getattr(ds, "PixelSpacing", None)
            if spacing is None:
                raise InputError(path, "DICOM image without PixelSpacing; its geometry is unknown")
            planes[key] = _Plane(
                series_uid=uid,
                description=str(getattr(ds, "SeriesDescription", "") or ""),
                row_cos=iop[:3] / np.linalg.norm(iop[:3]),
                col_cos=iop[3:] / np.linalg.norm(iop[3:]),
                position=ipp,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                pixel_spacing=(float(spacing[0]), float(spacing[1])),
                thickness=float(getattr(ds, "SliceThickness", 0) or 0),
                series_number=int(getattr(ds, "SeriesNumber", 0) or 0),
            )
        trigger = float(getattr(ds, "TriggerTime", 0) or 0)
        planes[key].files.append((trigger, int(getattr(ds, "InstanceNumber", 0) or 0), path))
    return list(planes.values())


def _stacks(planes: list[_Plane]) -> list[list[_Plane]]:
    """Group planes with parallel normals."""
    cos_tol = np.cos(np.radians(PARALLEL_TOLERANCE_DEG))
    stacks: list[list[_Plane]] = []
    for p in planes:
        for s in stacks:
            if abs(float(p.normal @ s[0].normal)) >= cos_tol:
                s.append(p)
                break
        else:
            stacks.append([p])
    return stacks


def _pixels(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(str(path))
    try:
        arr = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise InputError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    if not np.all(np.isfinite(arr)):
        raise InputError(path, "pixel data contains NaN or infinite values")
    return arr.T  # (columns, rows): index i runs along the row cosine, j along the column cosine


def _frames(plane: _Plane, num_frames: int) -> np.ndarray:
    files = plane.sorted_files()[:num_frames]
    return np.stack([_pixels(p) for p in files], axis=-1)  # (X, Y, T)


def _affine_lps(plane: _Plane, slice_step: np.ndarray) -> np.ndarray:
    a = np.eye(4)
    a[:3, 0] = plane.row_cos * plane.pixel_spacing[1]
    a[:3, 1] = plane.col_cos * plane.pixel_spacing[0]
    a[:3, 2] = slice_step
    a[:3, 3] = plane.position
    return a


def _check_same_grid(folder: Path, planes: list[_Plane], what: str) -> None:
    sizes = {(p.rows, p.columns) for p in planes}
    if len(sizes) > 1:
        raise InputError(folder, f"{what} slices have mixed image sizes {sorted(sizes)} (rows, columns)")
    spacings = {tuple(np.round(p.pixel_spacing, 4)) for p in planes}
    if len(spacings) > 1:
        raise InputError(folder, f"{what} slices have mixed pixel spacings {sorted(spacings)}")


def _lax_name(description: str, taken: set[str], counter: list[int]) -> str:
    d = description.upper().replace(" ", "").replace("_", "")
    for key, name in (("2CH", "2ch"), ("3CH", "3ch"), ("4CH", "4ch"), ("LVOT", "3ch")):
        if key in d:
            base = name
            break
    else:
        counter[0] += 1
        base = f"lax{counter[0]}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def read_dicom_folder(folder: str | Path) -> Study:
    """Read every DICOM cine series below `folder` into one Study (SAX + LAX views)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "DICOM folder not found")
    headers = _read_headers(folder)
    if not headers:
        raise InputError(folder, "no DICOM images with position and orientation found")
    planes = _planes(headers)
    stacks = sorted(_stacks(planes), key=len, reverse=True)
    sax_planes = stacks[0]
    if len(sax_planes) < 2:
        raise InputError(folder, "no stack of two or more parallel slices found for the SAX cine")
    _check_same_grid(folder, sax_planes, "SAX")

    normal = sax_planes[0].normal
    sax_planes.sort(key=lambda p: float(p.position @ normal))
    heights = np.array([float(p.position @ normal) for p in sax_planes])
    if np.any(np.diff(heights) < 0.1):
        dup = [(sax_planes[i].series_number, sax_planes[i + 1].series_number)
               for i in np.flatnonzero(np.diff(heights) < 0.1)]
        raise InputError(folder, f"two SAX series at the same slice position (series numbers {dup})")
    steps = np.diff(heights)
    if np.max(np.abs(steps - steps.mean())) > 0.1 * steps.mean():
        raise InputError(folder, f"SAX slices are not evenly spaced: positions {np.round(heights, 2).tolist()} mm")

    frame_counts = {len(p.files) for p in sax_planes}
    num_frames = min(frame_counts)
    if len(frame_counts) > 1:
        warnings.warn(f"{folder}: SAX slices have {sorted(frame_counts)} frames; using the first {num_frames}")
    step_lps = (sax_planes[-1].position - sax_planes[0].position) / (len(sax_planes) - 1)
    affine = LPS_TO_RAS @ _affine_lps(sax_planes[0], step_lps)
    data = np.stack([_frames(p, num_frames) for p in sax_planes], axis=2)  # (X, Y, Z, T)
    triggers = np.mean([p.trigger_times()[:num_frames] for p in sax_planes], axis=0)
    sax_meta = {
        "source": str(folder),
        "slice_thickness_mm": sax_planes[0].thickness or float(np.linalg.norm(step_lps)),
        "trigger_times_ms": [float(t) for t in triggers],
        "series_numbers": [p.series_number for p in sax_planes],
        "files": [[str(f) for f in p.sorted_files()[:num_frames]] for p in sax_planes],
    }
    if num_frames > 1:
        sax_meta["frame_interval"] = float(np.mean(np.diff(triggers)))
    sax = Volume(data, affine, sax_meta)

    lax: dict[str, Volume] = {}
    counter = [0]
    for plane in sorted((p for s in stacks[1:] for p in s), key=lambda p: p.series_number):
        step = plane.normal * (plane.thickness or 1.0)
        n_frames = len(plane.files)
        pixels = _frames(plane, n_frames)[:, :, None, :]
        name = _lax_name(plane.description, set(lax), counter)
        lax[name] = Volume(pixels, LPS_TO_RAS @ _affine_lps(plane, step), {
            "source": str(folder),
            "slice_thickness_mm": plane.thickness,
            "series_description": plane.description,
            "series_number": plane.series_number,
            "trigger_times_ms": plane.trigger_times(),
        })
    for path, _ in headers:
        register_input(path)
    return Study(sax=sax, lax=lax, meta={"source": str(folder), "format": "dicom"})


def looks_like_dicom_folder(folder: Path) -> bool:
    """True when `folder` holds at least one file with a DICOM preamble (checked cheaply)."""
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                with open(path, "rb") as fh:
                    head = fh.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM" or re.search(r"\.(dcm|ima)$", path.name, re.I):
                return True
    return False
