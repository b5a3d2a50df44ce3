"""Reading the NIfTI files of a layout into Volumes: a SAX stack or cine, ED/ES extracts stacked as
frames, LAX views, label maps checked against their image (shape, grid, values 0..3)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError
from cardiorecon.io.nifti import read_nifti
from cardiorecon.volume import Volume


def _as_4d(volume: Volume) -> Volume:
    return volume if volume.data.ndim == 4 else volume.with_data(volume.data[..., None])


def _labels(volume: Volume, path: Path) -> Volume:
    data = volume.data
    if np.issubdtype(data.dtype, np.floating):
        if not np.allclose(data, np.round(data)):
            raise InputError(path, "label map has non-integer values")
    data = np.round(data).astype(np.int64)
    if data.min() < 0 or data.max() > 3:
        raise InputError(path, f"label values must be 0..3, found {sorted(np.unique(data).tolist())[:10]}")
    return Volume(data.astype(np.uint8), volume.affine, volume.meta)


def _read_sax(path: Path) -> Volume:
    vol = read_nifti(path, ndim=(3, 4), dtype=np.float32)
    if vol.data.ndim == 3:
        _note_3d_image(path, vol)
    return _as_4d(vol)


def _note_3d_image(path: Path, vol: Volume) -> None:
    """A 3D SAX file is read as one frame of Z slices. A cine of one slice stored as (X, Y, T) looks the
    same; where the header hints at that (time units, or the unset voxel size 1 along k), say so."""
    import nibabel as nib

    try:
        _, time_unit = nib.load(str(path)).header.get_xyzt_units()
    except Exception:  # noqa: BLE001 - read_nifti has read this file already; be lenient here
        return
    hints = []
    if time_unit not in (None, "unknown"):
        hints.append(f"its header has time units ({time_unit})")
    if vol.spatial_shape[2] >= 10 and abs(float(vol.spacing[2]) - 1.0) < 1e-6:
        hints.append("1 mm apart, the value of an unset voxel size")
    if hints:
        warnings.warn(f"{path}: 3D image read as one frame of {vol.spatial_shape[2]} slices ({'; '.join(hints)}); "
                      "if its third axis is time (a cine of one slice), store it as (X, Y, 1, T)",
                      GeometryWarning, stacklevel=3)


def _stack_frames(paths: list[Path], labels: bool = False) -> Volume:
    vols = [read_nifti(p, ndim=(3,)) for p in paths]
    for p, v in zip(paths[1:], vols[1:]):
        if v.shape != vols[0].shape or not np.allclose(v.affine, vols[0].affine, atol=1e-3):
            raise InputError(p, f"shape or affine differs from {paths[0].name}")
    vols = [_labels(v, p) if labels else v for p, v in zip(paths, vols)]
    data = np.stack([v.data for v in vols], axis=-1)
    meta = {"source": str(paths[0])}
    if any(v.meta.get("geometry") == "none" for v in vols):
        meta["geometry"] = "none"  # no sform/qform code: no LAX view may be placed against it (Study drops them)
    return Volume(data if labels else data.astype(np.float32), vols[0].affine, meta)


def _read_lax(path: Path, labels: bool = False) -> Volume:
    vol = read_nifti(path, ndim=(2, 3, 4))
    if vol.spatial_shape[2] != 1:
        raise InputError(path, f"a LAX view must be one slice (X, Y, 1[, T]), got shape {vol.shape}")
    vol = _labels(vol, path) if labels else vol.with_data(vol.data.astype(np.float32))
    return _as_4d(vol)


def _expand_labels(labels: Volume, num_frames: int, frames: list[int], path: Path) -> Volume:
    """Place labels of `frames` into a (X, Y, Z, num_frames) map."""
    data = labels.data if labels.data.ndim == 4 else labels.data[..., None]
    if data.shape[3] == num_frames:
        return labels if labels.data.ndim == 4 else labels.with_data(data)
    if data.shape[3] != len(frames):
        raise InputError(path, f"label map has {data.shape[3]} frames; the image has {num_frames}")
    full = np.zeros(data.shape[:3] + (num_frames,), dtype=np.uint8)
    for i, t in enumerate(frames):
        full[..., t] = data[..., i]
    return Volume(full, labels.affine, labels.meta)


def _optional_labels(build, path: Path, problems: list[str]):
    """Labels from `build()`, or None with a warning naming the file when they do not fit the image."""
    try:
        return build()
    except InputError as exc:
        msg = f"{exc}; the study is read without these labels"
        warnings.warn(msg, stacklevel=3)
        problems.append(msg)
        return None


def _check_label_grid(labels: Volume, image: Volume, path: Path) -> Volume:
    if labels.spatial_shape != image.spatial_shape:
        raise InputError(path, f"label map shape {labels.shape} does not match the image {image.shape}")
    if not np.allclose(labels.affine, image.affine, atol=1e-3):
        raise InputError(path, "label map geometry (affine) differs from the image's")
    return labels


def _match_frame(cine: Volume, frame: Volume) -> int:
    """Index of the cine frame closest to `frame` (an ED or ES extract of the same cine)."""
    if frame.spatial_shape != cine.spatial_shape:
        raise InputError(frame.meta.get("source"), f"shape {frame.shape} differs from the cine's {cine.shape}")
    diffs = [float(np.mean((cine.data[..., t] - frame.data) ** 2)) for t in range(cine.num_frames)]
    return int(np.argmin(diffs))
