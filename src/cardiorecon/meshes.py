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
pre-smoothing the mask with a Gaussian (sigma 0.7-1 voxel) instead cost 0.4-3.6 %.
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


def surface_mesh(mask: np.ndarray, affine: np.ndarray, smoothing_iterations: int = 20):
    """Closed, outward-oriented triangle mesh (trimesh.Trimesh, world mm) of a 3D boolean mask.

    Raises ValueError for an empty mask.
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
