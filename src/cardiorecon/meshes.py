"""Surface meshes of the ventricles from label maps: LV endocardium, LV epicardium, RV.

A structure's mask (LV endocardium: LV cavity; LV epicardium: LV cavity + myocardium; RV: RV cavity)
is reduced to its largest face-connected component with its internal holes filled (papillary
muscles inside the cavity count as cavity, as in UK Biobank volumetry), padded by one empty voxel so
the surface closes where the mask touches the image border, and meshed by scikit-image's marching
cubes at the 0.5 iso-level of the binary mask in voxel coordinates. Vertices are then mapped to world
(RAS+ mm) by the volume's affine, so the meshes overlay the image in any viewer. Taubin smoothing
(trimesh; lambda 0.5, mu -0.53) removes the voxel staircase with little shrinkage.

Measured on phantom truth labels (1.8 x 1.8 x 2 mm voxels, ED and ES, 20 Taubin iterations): the
enclosed volume stays within 0.5 % of the meshed mask's voxel volume (largest error -0.4 %, the ES RV);
pre-smoothing the mask with a Gaussian (sigma 0.7-1 voxel) instead cost 0.4-3.6 %. On real scans'
segmentations (small, thin or ragged structures) marching cubes and smoothing lost 4-10 % and more, so
the smoothed surface is then moved along its normals by one common offset of at most half a voxel
(`match_volume`) until it encloses the voxel volume (issue 29); the offset is reported per mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from cardiorecon.io.nifti import atomic_write
from cardiorecon.volume import LABELS

#: Meshed structures: name -> label values forming the solid.
MESH_STRUCTURES: Mapping[str, tuple[int, ...]] = {
    "lv_endo": (LABELS["lv_cavity"],),
    "lv_epi": (LABELS["lv_cavity"], LABELS["lv_myocardium"]),
    "rv": (LABELS["rv_cavity"],),
}
MESH_FORMATS = ("stl", "ply")


@dataclass
class SurfaceMesh:
    """One structure's closed surface (world mm) and its volumes.

    voxel_volume_ml: volume of the meshed mask (largest component, holes filled);
    label_volume_ml: volume of every voxel with the structure's labels (what the volume curves use).
    """

    name: str
    mesh: "object"  # trimesh.Trimesh
    voxel_volume_ml: float
    label_volume_ml: float

    @property
    def mesh_volume_ml(self) -> float:
        return float(self.mesh.volume) / 1000.0

    @property
    def volume_error(self) -> float:
        """(mesh - voxel) / voxel volume of the meshed mask (a fraction)."""
        return (self.mesh_volume_ml - self.voxel_volume_ml) / self.voxel_volume_ml

    @property
    def watertight(self) -> bool:
        return bool(self.mesh.is_watertight and self.mesh.is_winding_consistent)

    def summary(self) -> dict[str, float | int | bool | str]:
        return {"structure": self.name, "voxel_volume_ml": self.voxel_volume_ml,
                "label_volume_ml": self.label_volume_ml, "mesh_volume_ml": self.mesh_volume_ml,
                "volume_error_pct": 100.0 * self.volume_error, "watertight": self.watertight,
                "volume_offset_mm": float(self.mesh.metadata.get("volume_offset_mm", 0.0)),
                "vertices": int(len(self.mesh.vertices)), "faces": int(len(self.mesh.faces))}


def structure_mask(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """The solid to mesh: voxels with any of `values`, largest face-connected component, holes filled."""
    mask = np.isin(np.asarray(labels), list(values))
    components, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


#: Volume matching (issue 29): a surface is moved along its normals until it encloses the mask's voxel
#: volume within this fraction, by at most MAX_OFFSET_VOXEL of the smallest voxel size.
VOLUME_TOLERANCE = 0.002
MAX_OFFSET_VOXEL = 0.5


def match_volume(mesh, target_mm3: float, max_offset_mm: float, iterations: int = 6) -> float:
    """Move every vertex of a closed, outward-oriented mesh by one common distance along its normal so
    that the enclosed volume equals `target_mm3` (to VOLUME_TOLERANCE), within +-`max_offset_mm`.

    Marching cubes on a binary mask cuts every convex corner and edge of the voxels, and smoothing
    rounds them further: on small or thin structures (a few mL, a crescent RV at ES, the ragged mask of a
    real scan's segmentation) the enclosed volume fell 4-10 % (up to half) short of the voxel volume.
    A uniform normal offset of a fraction of a voxel restores it without changing the shape's form:
    dV = area x offset, iterated (Newton steps). Returns the offset applied (mm, positive outward)."""
    total = 0.0
    for _ in range(iterations):
        volume, area = float(mesh.volume), float(mesh.area)
        if area <= 0 or abs(target_mm3 - volume) <= VOLUME_TOLERANCE * target_mm3:
            break
        step = float(np.clip(total + (target_mm3 - volume) / area, -max_offset_mm, max_offset_mm)) - total
        if abs(step) < 1e-6:
            break
        mesh.vertices = mesh.vertices + step * mesh.vertex_normals
        total += step
    return total


def surface_mesh(mask: np.ndarray, affine: np.ndarray, smoothing_iterations: int = 20,
                 match_voxel_volume: bool = True):
    """Closed, outward-oriented triangle mesh (trimesh.Trimesh, world mm) of a 3D boolean mask.

    match_voxel_volume: after smoothing, offset the surface along its normals (`match_volume`, at most
    half the smallest voxel size) so that it encloses the mask's voxel volume; the offset (mm) is kept
    in `mesh.metadata["volume_offset_mm"]`. Raises ValueError for an empty mask.
    """
    import trimesh
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"surface_mesh needs a 3D mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("empty mask: nothing to mesh")
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts = (verts - 1.0) @ np.asarray(affine, np.float64)[:3, :3].T + np.asarray(affine, np.float64)[:3, 3]
    mesh = trimesh.Trimesh(verts, faces, process=True)
    if smoothing_iterations:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=smoothing_iterations)
    if mesh.volume < 0:  # a left-handed affine mirrors the surface: flip the winding back outward
        mesh.invert()
    mesh.metadata["volume_offset_mm"] = 0.0
    if match_voxel_volume:
        a = np.asarray(affine, np.float64)[:3, :3]
        voxel_mm3 = abs(float(np.linalg.det(a)))
        smallest = float(np.min(np.linalg.norm(a, axis=0)))
        mesh.metadata["volume_offset_mm"] = match_volume(mesh, float(mask.sum()) * voxel_mm3,
                                                         MAX_OFFSET_VOXEL * smallest)
    return mesh


def ventricle_meshes(labels: np.ndarray, affine: np.ndarray, structures: Mapping[str, Sequence[int]] = MESH_STRUCTURES,
                     smoothing_iterations: int = 20) -> dict[str, SurfaceMesh]:
    """Surface meshes of each structure present in a 3D label map; absent structures are left out."""
    labels = np.asarray(labels)
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, np.float64)[:3, :3]))) / 1000.0
    out = {}
    for name, values in structures.items():
        mask = structure_mask(labels, values)
        if not mask.any():
            continue
        out[name] = SurfaceMesh(name, surface_mesh(mask, affine, smoothing_iterations),
                                voxel_volume_ml=float(mask.sum()) * voxel_ml,
                                label_volume_ml=float(np.isin(labels, list(values)).sum()) * voxel_ml)
    return out


def write_mesh(mesh, stem: str | Path, formats: Sequence[str] = MESH_FORMATS) -> list[Path]:
    """Write `mesh` as STEM.stl / STEM.ply (binary), atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in MESH_FORMATS:
            raise ValueError(f"mesh format must be one of {MESH_FORMATS}, got {fmt!r}")
        data = mesh.export(file_type=fmt)
        path = stem.with_name(f"{stem.name}.{fmt}")
        written.append(atomic_write(path, lambda tmp, d=data: Path(tmp).write_bytes(d), suffix=f".{fmt}"))
    return written


__all__ = ["MESH_FORMATS", "MESH_STRUCTURES", "SurfaceMesh", "structure_mask", "surface_mesh", "ventricle_meshes",
           "write_mesh"]
