"""NIfTI reading and writing with exact affines (nibabel does the format)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cardiorecon.errors import InputError, OutputError
from cardiorecon.volume import Volume, check_affine

# Every file read in this process; writers refuse to replace any of them.
_INPUTS: set[Path] = set()


def register_input(path: str | Path) -> None:
    """Remember `path` as an input so that no writer overwrites it."""
    _INPUTS.add(Path(path).resolve())


def is_input(path: str | Path) -> bool:
    return Path(path).resolve() in _INPUTS


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
        affine = sform
    elif qcode:
        affine = qform
    else:
        affine = img.affine  # nibabel's fall-back from pixdim; no code set in the file
    affine = check_affine(affine, path)
    if dtype is not None:
        data = data.astype(dtype)
    meta: dict[str, Any] = {"source": str(path)}
    zooms = header.get_zooms()
    if len(zooms) > 3 and data.ndim == 4 and zooms[3] > 0:
        meta["frame_interval"] = float(zooms[3])
    register_input(path)
    return Volume(data, affine, meta)


def atomic_write(path: str | Path, write: Any, suffix: str = "") -> Path:
    """Call `write(tmp_path)` then rename the temporary file onto `path`.

    Refuses to replace a file that was read as an input in this process. On failure nothing
    at `path` changes and the temporary file is removed.
    """
    path = Path(path)
    if is_input(path):
        raise OutputError(path, "refusing to overwrite an input file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
    img.header.set_xyzt_units("mm", "msec")
    zooms = list(img.header.get_zooms())
    if data.ndim == 4 and "frame_interval" in volume.meta:
        zooms[3] = float(volume.meta["frame_interval"])
        img.header.set_zooms(zooms)
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)), suffix=".nii.gz" if path.name.endswith(".gz") else ".nii")
