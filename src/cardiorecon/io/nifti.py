"""NIfTI reading and writing with exact affines (nibabel does the format)."""

from __future__ import annotations

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
        with ImageOpener(str(path)) as fobj:
            raw = type(img.header).from_fileobj(fobj, check=False)
        return np.asarray(raw["pixdim"], dtype=np.float64)
    except Exception:  # an unusual header class: trust nibabel's
        return np.asarray(img.header["pixdim"], dtype=np.float64)


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
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
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
    path.parent.mkdir(parents=True, exist_ok=True)
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


#: a qform further than this from the affine at any image corner is reported on writing (less is well under
#: a voxel and does not matter to any reader: no "0.00 mm" notes, issue 27)
QFORM_TOLERANCE_MM = 0.5


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
                      f"rigid + zoom approximation, up to {off:.1f} mm off at the image corners",
                      GeometryWarning, stacklevel=2)
    img.header.set_xyzt_units("mm", "msec" if data.ndim == 4 else None)  # a time unit only where there is time
    zooms = list(img.header.get_zooms())
    if data.ndim == 4 and "frame_interval" in volume.meta:
        zooms[3] = float(volume.meta["frame_interval"])
        img.header.set_zooms(zooms)
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)), suffix=".nii.gz" if path.name.endswith(".gz") else ".nii")


def check_output_folder(out: str | Path, inputs: list[str | Path] = (), names: tuple[str, ...] = ()) -> Path:
    """Check, before any work starts, that `out` can be the output folder: not an existing file,
    not one of the `inputs` (nor a folder holding an input file among `names`, the files the
    command will write there), and writable. Creates nothing; raises OutputError naming `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a folder; give a folder for --out")
    resolved = out.resolve()
    for inp in inputs:
        p = Path(inp).resolve()
        if p == resolved:
            raise OutputError(out, "is an input; give another folder for --out (outputs never replace inputs)")
        if p.parent == resolved and p.name in names:
            raise OutputError(out, f"would overwrite the input {inp}; give another folder for --out")
    for name in names:
        if is_input(out / name):
            raise OutputError(out / name, "is an input; give another folder for --out")
    existing = out
    while not existing.exists():  # the nearest folder that exists must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(out, f"{existing} is a file, so this folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(out, f"cannot write into {existing} (permission denied)")
    return out
