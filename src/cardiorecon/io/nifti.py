"""NIfTI reading and writing with exact affines (nibabel does the format)."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError, OutputError
from cardiorecon.volume import Volume, check_affine

# Every file read in this process; writers refuse to replace any of them.
_INPUTS: set[Path] = set()


def register_input(path: str | Path) -> None:
    """Remember `path` as an input so that no writer overwrites it."""
    _INPUTS.add(Path(path).resolve())


def is_input(path: str | Path) -> bool:
    return Path(path).resolve() in _INPUTS


def _raw_pixdim(path: Path, img: Any) -> np.ndarray:
    """pixdim as stored in the file (nibabel's header object has already replaced zeros by 1)."""
    from nibabel.openers import ImageOpener

    try:
        from nibabel.imageglobals import LoggingOutputSuppressor

        with ImageOpener(str(path)) as fobj, LoggingOutputSuppressor():
            raw = type(img.header).from_fileobj(fobj, check=False)
        return np.asarray(raw["pixdim"], dtype=np.float64)
    except Exception:  # an unusual header class: trust nibabel's
        return np.asarray(img.header["pixdim"], dtype=np.float64)


#: Largest image read, in voxels (all frames): 2^28 is 1 GiB as float32, over 10 times a 50-frame UK Biobank
#: cine (208 x 192 x 10 x 50 = 20 M voxels). A header claiming more is refused before any data are read.
MAX_VOXELS = 2 ** 28
#: Above this many bytes of data, a .gz file's own record of its uncompressed size is checked against the
#: header before reading (a smaller file is read and a truncation reported by the reader, at little cost).
CHECK_GZIP_SIZE_ABOVE = 64 * 2 ** 20


def _gzip_isize(path: Path) -> int | None:
    """The uncompressed size mod 2^32 that a gzip file records in its last 4 bytes (of its last member)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def _check_size_from_header(path: Path, img: Any) -> None:
    """Refuse, from the header alone, an image too large to be a cine or larger than the file holds, so that
    a damaged or hostile header costs neither gigabytes of memory nor minutes."""
    shape = tuple(int(n) for n in img.shape)
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    need = voxels * itemsize
    if voxels > MAX_VOXELS:
        raise InputError(path, f"the header claims shape {shape} = {voxels:.3g} voxels ({need / 2 ** 30:.1f} GiB of "
                               f"data); a cardiac cine is far smaller (limit {MAX_VOXELS:.3g} voxels): refused before "
                               "reading")
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    name = path.name.lower()
    if name.endswith(".nii"):
        size = path.stat().st_size
        if size < offset + need:
            raise InputError(path, f"truncated: the header claims shape {shape} of {img.get_data_dtype()} "
                                   f"({offset + need} bytes with the header), the file holds {size}")
    elif name.endswith(".gz") and need > CHECK_GZIP_SIZE_ABOVE and offset + need < 2 ** 32:
        isize = _gzip_isize(path)
        if isize is not None and isize < offset + need:
            raise InputError(path, f"the header claims shape {shape} of {img.get_data_dtype()} ({offset + need} "
                                   f"bytes with the header), the compressed file holds {isize}: truncated or a "
                                   "wrong header; refused before reading")


def read_nifti(path: str | Path, *, ndim: tuple[int, ...] = (2, 3, 4), dtype: Any = None) -> Volume:
    """Read a NIfTI file into a Volume with its sform (else qform) affine.

    2D images become (X, Y, 1). `ndim` lists the dimensionalities accepted; anything else,
    NaN voxels, or a singular affine raise InputError naming the file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        from nibabel.imageglobals import LoggingOutputSuppressor

        with LoggingOutputSuppressor():  # its "setting 0 dims to 1" log line: a zero size is judged below
            img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_size_from_header(path, img)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    # Trailing singleton dimensions beyond 4 (e.g. X, Y, Z, 1, 1) are dropped.
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in ndim:
        raise InputError(path, f"expected a {' or '.join(f'{d}D' for d in ndim)} image, got shape {data.shape}")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise InputError(path, f"unsupported image shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(path, f"{bad} voxels are NaN or infinite")
    header = img.header
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    if scode:
        affine, geometry = sform, "sform"
    elif qcode:
        # nibabel silently turns a zero voxel size into 1 mm; the raw header says what the file holds
        pixdim = _raw_pixdim(path, img)
        bad = [i for i in range(1, min(4, data.ndim + 1)) if not (np.isfinite(pixdim[i]) and pixdim[i] > 0)]
        if bad:
            raise InputError(path, f"the qform (no sform) needs voxel sizes, but pixdim[{bad[0]}] = "
                                   f"{float(pixdim[bad[0]]):g}: the {('column', 'row', 'slice')[bad[0] - 1]} "
                                   "spacing is unknown")
        affine, geometry = qform, "qform"
    else:
        # No code set: the position and orientation are unknown. nibabel's pixdim fall-back puts
        # the image at the origin; say so, and mark the volume so that it guides nothing.
        affine, geometry = img.affine, "none"
        warnings.warn(f"{path}: sform and qform codes are both 0: position and orientation unknown "
                      "(voxel sizes from pixdim, origin at the centre)", GeometryWarning, stacklevel=2)
    affine = check_affine(affine, path)
    if dtype is not None:
        data = data.astype(dtype)
    meta: dict[str, Any] = {"source": str(path), "geometry": geometry}
    zooms = header.get_zooms()
    if len(zooms) > 3 and data.ndim == 4 and zooms[3] > 0:
        meta["frame_interval"] = float(zooms[3])
    register_input(path)
    return Volume(data, affine, meta)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any, suffix: str = "") -> Path:
    """Call `write(tmp_path)`, flush it to disk, then rename the temporary file onto `path`.

    The temporary file is created with mode 0o666 so that the process umask applies as for any
    new file (no umask toggling, which races between threads). Refuses to replace a file that
    was read as an input in this process. On failure nothing at `path` changes and the temporary
    file is removed.
    """
    path = Path(path)
    if is_input(path):
        raise OutputError(path, "refusing to overwrite an input file")
    if path.is_dir():
        raise OutputError(path, "is a folder; cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder belongs, no permission, a read-only or system folder
        raise OutputError(path, f"cannot create its folder ({exc.strerror or exc})") from None
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix or ''.join(path.suffixes)}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(path, f"cannot write here ({exc.strerror or exc})") from exc
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


#: a qform further than this from the affine at any image corner is reported on writing (a UK Biobank
#: affine, stored in float32, is a few thousandths of a mm from any rigid one: no reader can see that)
QFORM_TOLERANCE_MM = 0.01


def write_csv_rows(path: str | Path, rows: list[dict], fieldnames: list[str]) -> Path:
    """Write `rows` (dicts) as a CSV with these columns, atomically (`atomic_write`): floats with 6
    significant digits, missing keys empty, keys outside `fieldnames` ignored."""
    import csv

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore", restval="")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    return atomic_write(path, write, suffix=".csv")


def _finite(obj: Any) -> Any:
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_text(obj: Any, indent: int | None = 2, default: Any = None) -> str:
    """Valid JSON (RFC 8259) of `obj`: NaN and infinities (an NCC with no overlap, an EF without ES) become
    null, numpy scalars and arrays plain numbers and lists; Python's json would write the invalid `NaN`."""
    if default is not None:
        obj = json.loads(json.dumps(obj, default=default))  # the caller's conversions first (NaN survives)
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def qform_error_mm(affine: np.ndarray, qform: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between `affine` and `qform` over the corners of a grid of `shape`."""
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.max(np.linalg.norm((affine @ corners - qform @ corners)[:3], axis=0)))


def write_nifti(volume: Volume, path: str | Path, dtype: Any = None) -> Path:
    """Write `volume` as NIfTI-1 with sform and qform set to its affine (code 1, scanner).

    The file appears atomically (temporary name, then rename) and never replaces an input.
    """
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise OutputError(path, "NIfTI output must end in .nii or .nii.gz")
    data = volume.data if dtype is None else volume.data.astype(dtype)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    # A qform holds rotation, zooms and a flip only; nibabel writes the nearest one for a sheared
    # affine. The sform keeps the exact affine; say how far a qform-only reader would be off.
    off = qform_error_mm(volume.affine, img.get_qform(), data.shape[:3])
    if off > QFORM_TOLERANCE_MM:
        warnings.warn(f"{path}: the affine is sheared; the sform holds it exactly, the qform is its nearest "
                      f"rigid + zoom approximation, up to {off:.2g} mm off at the image corners",
                      GeometryWarning, stacklevel=2)
    img.header.set_xyzt_units("mm", "msec" if data.ndim == 4 else None)  # a time unit only where there is time
    zooms = list(img.header.get_zooms())
    if data.ndim == 4 and "frame_interval" in volume.meta:
        zooms[3] = float(volume.meta["frame_interval"])
        img.header.set_zooms(zooms)
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)), suffix=".nii.gz" if path.name.endswith(".gz") else ".nii")


def check_output_folder(out: str | Path, inputs: list[str | Path] = (), names: tuple[str, ...] = ()) -> Path:
    """Check, before any work starts, that `out` can be the output folder: not an existing file,
    not one of the `inputs` nor inside an input folder (nor a folder holding an input file among `names`,
    the files the command will write there), not under /proc or /sys, and writable. Creates nothing;
    raises OutputError naming `out`."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(out, "exists and is not a folder; give a folder for --out")
        resolved = out.resolve()
    except OSError as exc:  # a path the system will not look at (a loop of links, a name too long)
        raise OutputError(out, f"cannot be used as the output folder ({exc.strerror or exc})") from None
    if resolved == Path("/proc") or Path("/proc") in resolved.parents or \
            resolved == Path("/sys") or Path("/sys") in resolved.parents:
        raise OutputError(out, "is under a system folder (/proc, /sys) that holds no files; give another folder")
    for inp in inputs:
        p = Path(inp).resolve()
        if p == resolved:
            raise OutputError(out, "is an input; give another folder for --out (outputs never replace inputs)")
        if p.is_dir() and p in resolved.parents:
            # a later run would find the outputs among the inputs (a cohort reading its own subjects)
            raise OutputError(out, f"is inside the input folder {inp}; give a folder outside it for --out")
        if p.parent == resolved and p.name in names:
            raise OutputError(out, f"would overwrite the input {inp}; give another folder for --out")
    for name in names:
        if is_input(out / name):
            raise OutputError(out / name, "is an input; give another folder for --out")
    existing = resolved
    while not existing.exists():  # the nearest folder that exists must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(out, f"{existing} is a file, so this folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(out, f"cannot write into {existing} (permission denied)")
    return out
