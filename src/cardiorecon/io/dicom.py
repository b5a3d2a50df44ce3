"""A folder of DICOM cine series -> Study (pydicom reads the files).

Slices are grouped into planes (series, orientation, position), planes into stacks of parallel
planes; the largest stack is the SAX cine, every other plane a LAX view. Frames are ordered by
trigger time. DICOM patient coordinates are LPS; the affines returned are RAS (x and y flipped).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError
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
    frame_of_reference: str = ""  # of its first file; "*" when its files disagree
    files: list[tuple[float, int, Path]] = field(default_factory=list)  # (trigger ms, instance, path)

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_cos, self.col_cos)
        return n / np.linalg.norm(n)

    def sorted_files(self) -> list[Path]:
        return [p for _, _, p in sorted(self.files, key=lambda f: (f[0], f[1]))]

    def trigger_times(self) -> list[float]:
        return sorted(f[0] for f in self.files)


# pydicom reports invalid values (real scanners write UIDs with leading zeros etc.; the values are
# still usable) both as warnings and on its logger. While this module reads, both are muted; pydicom's
# own configuration is never changed.
_READING: contextvars.ContextVar[bool] = contextvars.ContextVar("cardiorecon_dicom_reading", default=False)


class _MuteWhileReading(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _READING.get()


_MUTE = _MuteWhileReading()


@contextlib.contextmanager
def _quiet():
    logger = logging.getLogger("pydicom")
    if _MUTE not in logger.filters:
        logger.addFilter(_MUTE)
    token = _READING.set(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
            yield
    finally:
        _READING.reset(token)


def _quiet_dcmread(path: Path, **kwargs):
    import pydicom

    with _quiet():
        return pydicom.dcmread(str(path), **kwargs)


def _header_value(ds, name: str, default=None):
    with _quiet():
        return getattr(ds, name, default)


def _read_headers(folder: Path) -> list[tuple[Path, object]]:
    """Headers of every DICOM image below `folder`. A file that claims to be DICOM (a .dcm/.ima
    name or the DICM preamble) but cannot be parsed is an InputError naming it: skipping it would
    shift its slice's cine by one phase. Other files (contours, CSV, notes) are ignored."""
    from pydicom.errors import InvalidDicomError

    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        claims_dicom = looks_like_dicom_file(path)
        try:
            ds = _quiet_dcmread(path, stop_before_pixels=True)
        except OSError as exc:
            raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from exc
        except InvalidDicomError:
            if claims_dicom:
                raise InputError(path, "not a readable DICOM file (no valid header)") from None
            continue
        except Exception as exc:  # pydicom raises many types on a truncated or corrupt header
            if claims_dicom:
                raise InputError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from exc
            continue
        if claims_dicom and len(ds) == 0:
            raise InputError(path, "truncated DICOM file: no data elements after the file header")
        try:
            has_geometry = ds.get("ImageOrientationPatient") is not None and ds.get("ImagePositionPatient") is not None
        except Exception as exc:
            raise InputError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from exc
        if not has_geometry:
            if "Rows" in ds and "Columns" in ds:
                warnings.warn(f"{path}: DICOM image without ImagePositionPatient/ImageOrientationPatient; not used")
            continue
        out.append((path, ds))
    return out


def _float_list(ds, name: str, count: int, path: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in _header_value(ds, name)], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{name} is not a list of numbers ({exc})") from exc
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise InputError(path, f"{name} must hold {count} finite numbers, got {values.tolist()}")
    return values


def _planes(headers: list[tuple[Path, object]]) -> list[_Plane]:
    planes: dict[tuple, _Plane] = {}
    seen: dict[str, Path] = {}
    for path, ds in headers:
        try:
            _add_file(planes, seen, path, ds)
        except InputError:
            raise
        except Exception as exc:  # a value pydicom cannot convert (unknown VR, text where a number belongs)
            raise InputError(path, f"corrupt DICOM header ({type(exc).__name__}: {str(exc)[:160]})") from exc
    return list(planes.values())


def _add_file(planes: dict, seen: dict, path: Path, ds) -> None:
    """Put one image into its plane (series, orientation, position), checking it against the others."""
    sop = str(_header_value(ds, "SOPInstanceUID", "") or "")
    if sop and sop in seen:
        # An exact copy (same SOP instance) under another name: the same image, used once.
        warnings.warn(f"{path}: the same image (SOPInstanceUID {sop}) as {seen[sop]}; the copy is ignored")
        return
    if sop:
        seen[sop] = path
    iop = _float_list(ds, "ImageOrientationPatient", 6, path)
    ipp = _float_list(ds, "ImagePositionPatient", 3, path)
    if np.linalg.norm(iop[:3]) < 1e-6 or np.linalg.norm(iop[3:]) < 1e-6 or \
            np.linalg.norm(np.cross(iop[:3], iop[3:])) < 1e-3:
        raise InputError(path, f"ImageOrientationPatient {iop.tolist()} does not give two independent directions")
    uid = str(_header_value(ds, "SeriesInstanceUID", "") or "")
    key = (uid, tuple(np.round(iop, 3)), tuple(np.round(ipp, 1)))
    spacing = _header_value(ds, "PixelSpacing")
    try:
        spacing = None if spacing is None else (float(spacing[0]), float(spacing[1]))
        rows, columns = int(_header_value(ds, "Rows")), int(_header_value(ds, "Columns"))
    except (TypeError, ValueError, IndexError) as exc:
        raise InputError(path, f"unreadable Rows/Columns/PixelSpacing ({exc})") from exc
    if spacing is None:
        raise InputError(path, "DICOM image without PixelSpacing; its geometry is unknown")
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise InputError(path, f"PixelSpacing must be positive, got {list(spacing)}")
    if key not in planes:
        planes[key] = _Plane(
            series_uid=uid,
            description=str(_header_value(ds, "SeriesDescription", "") or ""),
            row_cos=iop[:3] / np.linalg.norm(iop[:3]),
            col_cos=iop[3:] / np.linalg.norm(iop[3:]),
            position=ipp,
            rows=rows,
            columns=columns,
            pixel_spacing=spacing,
            thickness=float(_header_value(ds, "SliceThickness", 0) or 0),
            series_number=int(_header_value(ds, "SeriesNumber", 0) or 0),
            frame_of_reference=str(_header_value(ds, "FrameOfReferenceUID", "") or ""),
        )
    plane = planes[key]
    if str(_header_value(ds, "FrameOfReferenceUID", "") or "") != plane.frame_of_reference:
        plane.frame_of_reference = "*"
    if (rows, columns) != (plane.rows, plane.columns) or not np.allclose(spacing, plane.pixel_spacing, atol=1e-4):
        first = plane.files[0][2] if plane.files else "the first file"
        raise InputError(path, f"image of {rows} x {columns} pixels at {list(spacing)} mm, but the other images of "
                               f"its slice (series {plane.series_number}, like {first}) have {plane.rows} x "
                               f"{plane.columns} at {list(plane.pixel_spacing)} mm")
    trigger = float(_header_value(ds, "TriggerTime", 0) or 0)
    instance = int(_header_value(ds, "InstanceNumber", 0) or 0)
    for t, n, other in plane.files:
        if (t, n) == (trigger, instance):
            raise InputError(path, f"same slice (series {plane.series_number}, position "
                                   f"{np.round(plane.position, 1).tolist()} mm) and same phase (trigger time "
                                   f"{trigger:g} ms, instance {instance}) as {other}: which one belongs is unknown")
    plane.files.append((trigger, instance, path))


def _sax_frame_of_reference(folder: Path, planes: list[_Plane], sax_planes: list[_Plane]) -> str | None:
    """The SAX stack's FrameOfReferenceUID, or None where the UIDs say nothing.

    Where images share frames of reference (the normal case: one per study), SAX slices in
    different ones are an error and a LAX series in another one is not used. Anonymised data
    (Sunnybrook) give every image its own UID; then the UIDs cannot be compared, and a warning says so.
    """
    uids = {p.frame_of_reference for p in planes}
    if "*" in uids or len(uids) >= len(planes) > 1 or uids == {""}:
        if uids != {""}:
            warnings.warn(f"{folder}: FrameOfReferenceUID differs between images of one slice or between every slice "
                          "(anonymised data?); the slices' positions are used as they are", GeometryWarning)
        return None
    sax = {p.frame_of_reference for p in sax_planes}
    if len(sax) > 1:
        raise InputError(folder, f"the SAX slices lie in {len(sax)} different frames of reference (FrameOfReferenceUID "
                                 f"{sorted(sax)}): their positions cannot be compared")
    return sax.pop()


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


def _pixels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        ds = _quiet_dcmread(path)
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:
        raise InputError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if arr.shape != shape:
        raise InputError(path, f"pixel data of shape {arr.shape}, but Rows x Columns say {shape}")
    try:
        slope = float(_header_value(ds, "RescaleSlope", 1) or 1)
        intercept = float(_header_value(ds, "RescaleIntercept", 0) or 0)
    except Exception as exc:
        raise InputError(path, f"unreadable RescaleSlope/RescaleIntercept ({type(exc).__name__}: {exc})") from exc
    arr = arr * slope + intercept
    if not np.all(np.isfinite(arr)):
        raise InputError(path, "pixel data contains NaN or infinite values")
    return arr.T  # (columns, rows): index i runs along the row cosine, j along the column cosine


def _frames(plane: _Plane, num_frames: int) -> np.ndarray:
    files = plane.sorted_files()[:num_frames]
    return np.stack([_pixels(p, (plane.rows, plane.columns)) for p in files], axis=-1)  # (X, Y, T)


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


def _check_one_study(folder: Path, headers: list[tuple[Path, object]]) -> None:
    """Refuse a folder whose images belong to more than one patient or study: the other study's SAX
    slices would otherwise be taken for LAX views and guide this one. An empty PatientID or
    StudyInstanceUID (stripped by anonymisation) matches any."""
    for key, what in (("PatientID", "patients"), ("StudyInstanceUID", "studies")):
        values: dict[str, Path] = {}
        for path, ds in headers:
            value = str(_header_value(ds, key, "") or "").strip()
            if value and value not in values:
                values[value] = path
        if len(values) > 1:
            (a, pa), (b, pb) = list(values.items())[:2]
            more = f" and {len(values) - 2} more" if len(values) > 2 else ""
            raise InputError(folder, f"mixes {len(values)} {what}: {key} {a!r} ({pa.name}) and {b!r} ({pb.name})"
                                     f"{more}; put each patient's study in its own folder")


def read_dicom_folder(folder: str | Path) -> Study:
    """Read every DICOM cine series below `folder` into one Study (SAX + LAX views)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "DICOM folder not found")
    headers = _read_headers(folder)
    if not headers:
        raise InputError(folder, "no DICOM images with position and orientation found")
    _check_one_study(folder, headers)
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

    sax_for = _sax_frame_of_reference(folder, planes, sax_planes)
    counts = [len(p.files) for p in sax_planes]
    num_frames = max(set(counts), key=counts.count)  # the usual frame count
    for k, p in enumerate(sax_planes):
        if len(p.files) != num_frames:
            # Dropping or padding a phase would shift this slice's cine against the others.
            raise InputError(p.sorted_files()[0].parent,
                             f"SAX slice {k} (series {p.series_number}, position {heights[k]:.1f} mm along the normal, "
                             f"first file {p.sorted_files()[0].name}) has {len(p.files)} frames, the other slices "
                             f"{num_frames}: a file is missing or was unreadable")
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
        if sax_for is not None and plane.frame_of_reference != sax_for:
            warnings.warn(f"{plane.sorted_files()[0]}: LAX series {plane.series_number} ({plane.description!r}) has "
                          f"FrameOfReferenceUID {plane.frame_of_reference!r}, the SAX {sax_for!r}: its position "
                          "relative to the SAX stack is unknown, so it is not used", GeometryWarning)
            continue
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


def looks_like_dicom_file(path: Path) -> bool:
    """True when `path` has a DICOM preamble or a .dcm/.ima name (checked cheaply, no parsing)."""
    if re.search(r"\.(dcm|ima)$", path.name, re.I):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


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
