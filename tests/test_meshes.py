"""Surface meshes: closed, in world coordinates, enclosed volume within 2 % of the voxel volume."""

import numpy as np
import pytest
import trimesh

from cardiorecon.meshes import structure_mask, surface_mesh, ventricle_meshes, write_mesh


def ellipsoid(shape, centre, semi):
    idx = np.indices(shape).astype(float)
    r = sum(((idx[i] - centre[i]) / semi[i]) ** 2 for i in range(3))
    return r <= 1.0


def biventricle(shape=(48, 48, 40)):
    """LV cavity inside an LV myocardium shell, an RV beside it (labels 1, 2, 3)."""
    lab = np.zeros(shape, np.uint8)
    lab[ellipsoid(shape, (24, 22, 20), (11, 11, 15))] = 2
    lab[ellipsoid(shape, (24, 22, 20), (7, 7, 11))] = 1
    rv = ellipsoid(shape, (24, 36, 20), (8, 6, 12)) & (lab == 0)
    lab[rv] = 3
    return lab


AFFINE = np.array([[0.0, 1.8, 0, -40], [-1.8, 0.0, 0, 30], [0, 0, 2.0, -20], [0, 0, 0, 1]])  # rotated, anisotropic


def test_sphere_volume_matches_voxels_and_analytic():
    shape = (40, 40, 40)
    mask = ellipsoid(shape, (19.5, 20, 20.3), (12, 12, 12))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mesh = surface_mesh(mask, affine)
    assert mesh.is_watertight and mesh.is_winding_consistent
    voxel_ml = mask.sum() * 8 / 1000
    assert abs(mesh.volume / 1000 - voxel_ml) / voxel_ml < 0.02
    analytic_ml = 4 / 3 * np.pi * 24.0**3 / 1000  # radius 12 voxels of 2 mm
    assert abs(mesh.volume / 1000 - analytic_ml) / analytic_ml < 0.03
    # Taubin smoothing removes the staircase: vertex radii spread far less than a voxel.
    c = np.array([19.5, 20, 20.3]) * 2
    radii = np.linalg.norm(mesh.vertices - c, axis=1)
    assert radii.std() < 0.3  # mm; 0.22 measured, the unsmoothed staircase 0.41
    assert radii.std() < np.linalg.norm(surface_mesh(mask, affine, 0).vertices - c, axis=1).std()


@pytest.mark.parametrize("flip", [False, True])
def test_ventricle_meshes_closed_in_world_and_within_2_percent(flip):
    lab = biventricle()
    affine = AFFINE.copy()
    if flip:  # a left-handed affine (det < 0) must still give outward normals and a positive volume
        affine[:3, 0] *= -1
    meshes = ventricle_meshes(lab, affine)
    assert set(meshes) == {"lv_endo", "lv_epi", "rv"}
    for name, m in meshes.items():
        assert m.watertight, name
        assert m.mesh_volume_ml > 0
        assert abs(m.volume_error) < 0.02, (name, m.summary())
        # placed in the world by the affine: the mesh centroid is the mask's centroid mapped by it
        mask = structure_mask(lab, {"lv_endo": (1,), "lv_epi": (1, 2), "rv": (3,)}[name])
        centroid = affine[:3, :3] @ np.argwhere(mask).mean(0) + affine[:3, 3]
        assert np.linalg.norm(m.mesh.center_mass - centroid) < 1.0, name
    assert meshes["lv_epi"].mesh_volume_ml > meshes["lv_endo"].mesh_volume_ml
    voxel_ml = 1.8 * 1.8 * 2 / 1000
    assert meshes["lv_endo"].label_volume_ml == pytest.approx((lab == 1).sum() * voxel_ml)


def test_structure_mask_keeps_largest_component_and_fills_holes():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[4:14, 4:14, 4:14] = 1
    lab[8:10, 8:10, 8:10] = 2  # a papillary muscle inside the cavity: counted as cavity
    lab[17:19, 17:19, 17:19] = 1  # a stray island: dropped
    mask = structure_mask(lab, (1,))
    assert mask.sum() == 1000
    assert not mask[17, 17, 17]
    assert mask[8, 8, 8]


def test_absent_structure_and_empty_mask():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:6, 2:6, 2:6] = 1
    assert set(ventricle_meshes(lab, np.eye(4))) == {"lv_endo", "lv_epi"}
    with pytest.raises(ValueError, match="empty"):
        surface_mesh(np.zeros((5, 5, 5), bool), np.eye(4))


def test_write_mesh_stl_and_ply_round_trip(tmp_path):
    mesh = ventricle_meshes(biventricle(), AFFINE)["lv_epi"].mesh
    paths = write_mesh(mesh, tmp_path / "lv_epi_ed")
    assert [p.name for p in paths] == ["lv_epi_ed.stl", "lv_epi_ed.ply"]
    for p in paths:
        back = trimesh.load(p, force="mesh")
        assert back.is_watertight
        assert back.volume == pytest.approx(mesh.volume, rel=1e-4)
        assert np.allclose(back.bounds, mesh.bounds, atol=1e-3)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.8, 1.8, 10.0)])
def test_small_and_thin_structures_enclose_their_voxel_volume(spacing):
    """Issue 29: on real subjects' segmentations (small, thin, ragged) marching cubes plus smoothing enclosed
    4-10 % less than the voxel volume (a 125-voxel blob: -3.2 %), against the README's 2 %. The surface is
    now offset along its normals by at most half a voxel until it matches, and the offset is reported."""
    shape = (30, 30, 30)
    rng = np.random.default_rng(0)
    small = ellipsoid(shape, (15, 15, 15), (3.2, 2.6, 3.5))
    ii, jj, kk = np.indices(shape)
    r = np.hypot(ii - 15, jj - 15)
    crescent = (r >= 8) & (r < 9.6) & (jj > 12) & (kk > 5) & (kk < 25)  # an RV at end-systole
    ragged = ellipsoid(shape, (15, 15, 15), (8, 7, 9))
    edge = ragged & ~ellipsoid(shape, (15, 15, 15), (7, 6, 8))
    ragged &= ~(edge & (rng.random(shape) < 0.4))  # a network's ragged border
    affine = np.diag([*spacing, 1.0])
    for name, mask in (("small", small), ("crescent", crescent), ("ragged", ragged)):
        mask = structure_mask(mask.astype(np.uint8), (1,))
        mesh = surface_mesh(mask, affine)
        voxel_mm3 = mask.sum() * np.prod(spacing)
        assert mesh.is_watertight, name
        assert abs(mesh.volume - voxel_mm3) / voxel_mm3 < 0.005, (name, mesh.volume / voxel_mm3)
        assert abs(mesh.metadata["volume_offset_mm"]) <= 0.5 * min(spacing), name
    summary = ventricle_meshes(small.astype(np.uint8), affine)["lv_endo"].summary()
    assert abs(summary["volume_error_pct"]) < 0.5 and "volume_offset_mm" in summary
