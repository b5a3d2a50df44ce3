"""Affines, planes, cropping and resampling, all in RAS+ millimetres.

Every function that changes a grid returns a Volume with the exact new affine; label maps
are resampled with nearest neighbour (order 0), images with linear (order 1) or cubic (3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardiorecon.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Map voxel indices (..., 3) to world mm (..., 3)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Map world mm (..., 3) to fractional voxel indices (..., 3)."""
    inv = np.linalg.inv(affine)
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


@dataclass(frozen=True)
class Plane:
    """A plane through `point` (mm) with unit `normal`."""

    point: np.ndarray
    normal: np.ndarray

    def signed_distance(self, xyz: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of points (..., 3) to the plane, positive along the normal."""
        return (np.asarray(xyz, dtype=np.float64) - self.point) @ self.normal


def slice_plane(volume: Volume, k: float = 0) -> Plane:
    """The plane of slice k of `volume` (k may be fractional)."""
    center = [(volume.spatial_shape[0] - 1) / 2, (volume.spatial_shape[1] - 1) / 2, k]
    return Plane(voxel_to_world(volume.affine, center), volume.slice_normal)


def point_plane_distance(point: np.ndarray, plane: Plane) -> float:
    """Unsigned distance (mm) from `point` to `plane`."""
    return float(abs(plane.signed_distance(point)))


def plane_intersection(a: Plane, b: Plane) -> tuple[np.ndarray, np.ndarray]:
    """Line where two planes meet: (point on the line nearest to a.point, unit direction).

    Raises ValueError for (near-)parallel planes.
    """
    direction = np.cross(a.normal, b.normal)
    norm = np.linalg.norm(direction)
    if norm < 1e-6:
        raise ValueError("planes are parallel; they have no single intersection line")
    direction = direction / norm
    # Solve for the point x with n_a.x = d_a, n_b.x = d_b, direction.x = direction.a.point
    m = np.stack([a.normal, b.normal, direction])
    rhs = np.array([a.normal @ a.point, b.normal @ b.point, direction @ a.point])
    return np.linalg.solve(m, rhs), direction


def line_plane_intersection(point: np.ndarray, direction: np.ndarray, plane: Plane) -> np.ndarray:
    """Where the line point + s * direction crosses `plane`."""
    denom = float(direction @ plane.normal)
    if abs(denom) < 1e-9:
        raise ValueError("line is parallel to the plane")
    s = float((plane.point - point) @ plane.normal) / denom
    return point + s * direction


def point_line_distance(xyz: np.ndarray, point: np.ndarray, direction: np.ndarray) -> float:
    """Distance (mm) of `xyz` to the line through `point` along unit `direction`."""
    d = np.asarray(xyz, dtype=float) - point
    return float(np.linalg.norm(d - (d @ direction) * direction))


def angle_between_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two directions in degrees, 0..180."""
    c = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def upsampled_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of a stack upsampled through-plane by `factor`: slice 0 fixed, slice step / factor.

    Original slice k lies at new slice k * factor; the new stack has (Z - 1) * factor + 1 slices.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 2] /= factor
    return out


def upsampled_num_slices(num_slices: int, factor: int) -> int:
    return (num_slices - 1) * factor + 1


def crop(volume: Volume, start: tuple[int, int], size: tuple[int, int]) -> Volume:
    """In-plane crop of `size` voxels starting at voxel `start` (may go outside: zero padded)."""
    x0, y0 = int(start[0]), int(start[1])
    sx, sy = int(size[0]), int(size[1])
    X, Y = volume.spatial_shape[:2]
    out = np.zeros((sx, sy) + volume.shape[2:], dtype=volume.data.dtype)
    xs, xe = max(x0, 0), min(x0 + sx, X)
    ys, ye = max(y0, 0), min(y0 + sy, Y)
    if xs < xe and ys < ye:
        out[xs - x0 : xe - x0, ys - y0 : ye - y0] = volume.data[xs:xe, ys:ye]
    affine = volume.affine.copy()
    affine[:3, 3] = voxel_to_world(volume.affine, [x0, y0, 0])
    return Volume(out, affine, dict(volume.meta))


def resample(volume: Volume, affine: np.ndarray, shape: tuple[int, int, int], order: int = 1,
             cval: float = 0.0) -> Volume:
    """Resample `volume` onto the grid (affine, shape); 4D data frame by frame.

    order 0 (nearest) for label maps, 1 linear, 3 cubic. Outside the input: `cval`.
    """
    affine = np.asarray(affine, dtype=np.float64)
    # Voxel of the output -> voxel of the input: inv(A_in) @ A_out.
    m = np.linalg.inv(volume.affine) @ affine
    # Snap round-off (1e-15) so that grid-aligned samples on the border are not lost to cval.
    m = np.where(np.abs(m - np.round(m)) < 1e-9, np.round(m), m)
    frames = [volume.data] if volume.data.ndim == 3 else [volume.data[..., t] for t in range(volume.num_frames)]
    out_dtype = volume.data.dtype if order == 0 else np.float32
    out = []
    for f in frames:
        src = f if order == 0 else f.astype(np.float32)
        res = ndimage.affine_transform(src, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=order,
                                       mode="constant", cval=cval, prefilter=order > 1)
        out.append(res.astype(out_dtype))
    data = out[0] if volume.data.ndim == 3 else np.stack(out, axis=-1)
    return Volume(data, affine, dict(volume.meta))


def inplane_grid(volume: Volume, spacing_mm: float, size: int, center_world: np.ndarray) -> np.ndarray:
    """Affine of a size x size in-plane grid with square pixels of `spacing_mm`, centred on
    `center_world` projected onto the stack's first slice plane, keeping the slice axis."""
    d = volume.directions
    plane = slice_plane(volume, 0)
    c = np.asarray(center_world, dtype=float)
    c = c - plane.signed_distance(c) * plane.normal
    affine = np.eye(4)
    affine[:3, 0] = d[:, 0] * spacing_mm
    affine[:3, 1] = d[:, 1] * spacing_mm
    affine[:3, 2] = volume.affine[:3, 2]
    affine[:3, 3] = c - affine[:3, 0] * (size - 1) / 2 - affine[:3, 1] * (size - 1) / 2
    return affine


def resample_inplane(volume: Volume, spacing_mm: float, size: int, center_world: np.ndarray,
                     order: int = 1, sax_shifts_mm: np.ndarray | None = None) -> Volume:
    """Resample in-plane to square pixels of `spacing_mm` and crop size x size around
    `center_world`; slices stay where they are.

    `sax_shifts_mm` (Z, 2): per-slice breath-hold shifts (d_row, d_col) in mm along the voxel axes
    i and j (the phantom's convention: slice k was acquired where the header says, moved by the
    shift). Each slice is then sampled from where it really lies, in this same single resampling.
    None or all zero: the plain resampling."""
    affine = inplane_grid(volume, spacing_mm, size, center_world)
    shape = (size, size, volume.spatial_shape[2])
    if sax_shifts_mm is None or not np.any(np.asarray(sax_shifts_mm)):
        return resample(volume, affine, shape, order=order)
    return resample_slices(volume, affine, shape, sax_shifts_mm, order=order)


def shifted_slice_affine(affine: np.ndarray, k: int, shift_mm) -> np.ndarray:
    """Affine of slice k alone (a one-slice grid) where it was really acquired: the header's
    slice k moved in-plane by shift_mm = (d_row, d_col) mm along the voxel axes i and j."""
    a = np.array(affine, dtype=np.float64, copy=True)
    directions = a[:3, :2] / np.linalg.norm(a[:3, :2], axis=0)
    a[:3, 3] = a[:3, 3] + k * a[:3, 2] + directions @ np.asarray(shift_mm, dtype=np.float64)
    return a


def resample_slices(volume: Volume, affine: np.ndarray, shape: tuple[int, int, int], sax_shifts_mm: np.ndarray,
                    order: int = 1, cval: float = 0.0) -> Volume:
    """Resample a stack slice by slice onto (affine, shape), whose slice k lies on the input's
    slice k, taking input slice k from where it was acquired (`shifted_slice_affine`).

    One 2D resampling per slice and frame: no through-plane mixing, so no slice is resampled twice.
    """
    shifts = np.asarray(sax_shifts_mm, dtype=np.float64)
    Z = volume.spatial_shape[2]
    if shifts.shape != (Z, 2) or shape[2] != Z:
        raise ValueError(f"sax_shifts_mm must be ({Z}, 2) for a {Z}-slice stack onto {Z} slices, "
                         f"got {shifts.shape} onto {shape[2]}")
    affine = np.asarray(affine, dtype=np.float64)
    data = volume.data if volume.data.ndim == 4 else volume.data[..., None]
    out_dtype = volume.data.dtype if order == 0 else np.float32
    out = np.zeros(tuple(shape[:2]) + (Z, data.shape[3]), out_dtype)
    for k in range(Z):
        dst = affine.copy()
        dst[:3, 3] = affine[:3, 3] + k * affine[:3, 2]
        m = np.linalg.inv(shifted_slice_affine(volume.affine, k, shifts[k])) @ dst
        m = np.where(np.abs(m - np.round(m)) < 1e-9, np.round(m), m)
        if np.abs(m[2, [0, 1, 3]]).max() > 1e-3:
            raise ValueError(f"target slice {k} does not lie on input slice {k}")
        for t in range(data.shape[3]):
            src = data[:, :, k, t] if order == 0 else data[:, :, k, t].astype(np.float32)
            out[:, :, k, t] = ndimage.affine_transform(src, m[:2, :2], m[:2, 3], output_shape=tuple(shape[:2]),
                                                       order=order, mode="constant", cval=cval,
                                                       prefilter=order > 1)
    return Volume(out if volume.data.ndim == 4 else out[..., 0], affine, dict(volume.meta))


def shift_slices(volume: Volume, sax_shifts_mm: np.ndarray, order: int = 1) -> Volume:
    """The stack on its own grid with each slice k moved to where it was acquired (the breath-hold
    correction): voxel (i, j, k) then shows the anatomy at the header's position. Slices whose
    shift is exactly zero are copied unchanged."""
    shifts = np.asarray(sax_shifts_mm, dtype=np.float64)
    moved = resample_slices(volume, volume.affine, volume.spatial_shape, shifts, order=order)
    data = np.array(moved.data, dtype=moved.data.dtype, copy=True)
    for k in np.flatnonzero(~np.any(shifts, axis=1)):
        data[:, :, k] = volume.data[:, :, k]
    return Volume(data, volume.affine, dict(volume.meta))
