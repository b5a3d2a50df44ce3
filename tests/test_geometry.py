import nibabel as nib
import numpy as np
import pytest

from cardiorecon.geometry import (Plane, crop, plane_intersection, point_plane_distance, resample,
                                  resample_inplane, upsampled_affine, upsampled_num_slices, voxel_to_world,
                                  world_to_voxel)
from cardiorecon.volume import Volume
from conftest import oblique_affine


def test_voxel_world_round_trip_matches_nibabel():
    a = oblique_affine()
    ijk = np.array([[0, 0, 0], [3.5, 2, 7], [10, 20, 1]])
    xyz = voxel_to_world(a, ijk)
    np.testing.assert_allclose(xyz, nib.affines.apply_affine(a, ijk), atol=1e-9)
    np.testing.assert_allclose(world_to_voxel(a, xyz), ijk, atol=1e-9)


def test_volume_properties_from_affine():
    a = oblique_affine(spacing=(1.8, 1.6, 10.0))
    v = Volume(np.zeros((4, 5, 6, 2)), a)
    np.testing.assert_allclose(v.spacing, [1.8, 1.6, 10.0])
    np.testing.assert_allclose(v.origin, a[:3, 3])
    np.testing.assert_allclose(np.linalg.norm(v.slice_normal), 1.0)
    np.testing.assert_allclose(v.slice_normal, a[:3, 2] / 10.0, atol=1e-12)
    assert v.orientation == "".join(nib.aff2axcodes(a))
    assert v.num_frames == 2


def test_upsampled_affine_keeps_original_slices_in_place():
    a = oblique_affine()
    f = 5
    up = upsampled_affine(a, f)
    assert upsampled_num_slices(12, f) == 56
    for k in range(12):
        np.testing.assert_allclose(voxel_to_world(up, [3, 4, k * f]), voxel_to_world(a, [3, 4, k]), atol=1e-9)
    # New slices lie evenly between: slice 1 of the new stack is 1/5 of the way to old slice 1.
    np.testing.assert_allclose(voxel_to_world(up, [0, 0, 1]) - voxel_to_world(up, [0, 0, 0]), a[:3, 2] / f)


def test_plane_intersection_and_distance():
    p1 = Plane(np.array([0.0, 0, 5]), np.array([0.0, 0, 1]))
    p2 = Plane(np.array([3.0, 0, 0]), np.array([1.0, 0, 0]))
    point, direction = plane_intersection(p1, p2)
    np.testing.assert_allclose(abs(direction @ [0, 1, 0]), 1.0)
    assert point_plane_distance(point, p1) < 1e-9 and point_plane_distance(point, p2) < 1e-9
    assert point_plane_distance(np.array([1.0, 2, 8]), p1) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        plane_intersection(p1, Plane(np.zeros(3), np.array([0.0, 0, -1])))


def test_crop_affine_places_voxels_where_they_were():
    a = oblique_affine()
    data = np.random.default_rng(0).random((20, 18, 3))
    v = Volume(data, a)
    c = crop(v, (5, -2), (8, 8))
    assert c.shape == (8, 8, 3)
    np.testing.assert_allclose(voxel_to_world(c.affine, [1, 4, 2]), voxel_to_world(a, [6, 2, 2]))
    assert c.data[1, 4, 2] == data[6, 2, 2]
    assert np.all(c.data[:, :2] == 0)  # outside the input: zero padding


def test_resample_identity_and_linear_function():
    a = oblique_affine(spacing=(2.0, 2.0, 6.0))
    ijk = np.stack(np.meshgrid(np.arange(30), np.arange(30), np.arange(5), indexing="ij"), -1)
    xyz = voxel_to_world(a, ijk)
    f = 0.3 * xyz[..., 0] - 0.2 * xyz[..., 1] + 0.05 * xyz[..., 2]
    v = Volume(f, a)
    same = resample(v, a, v.spatial_shape, order=1)
    np.testing.assert_allclose(same.data, f, atol=1e-4)
    # In-plane resample to 1.5 mm around the centre: a linear function is reproduced exactly inside.
    r = resample_inplane(v, 1.5, 24, v.center_world, order=1)
    np.testing.assert_allclose(r.spacing, [1.5, 1.5, 6.0])
    np.testing.assert_allclose(r.slice_normal, v.slice_normal, atol=1e-12)
    xyz_r = voxel_to_world(r.affine, np.stack(np.meshgrid(np.arange(24), np.arange(24), np.arange(5), indexing="ij"), -1))
    expected = 0.3 * xyz_r[..., 0] - 0.2 * xyz_r[..., 1] + 0.05 * xyz_r[..., 2]
    np.testing.assert_allclose(r.data, expected, atol=1e-3)
    # Slices stay at their positions: slice k of r lies in the plane of slice k of v.
    for k in range(5):
        d = (voxel_to_world(r.affine, [0, 0, k]) - voxel_to_world(a, [0, 0, k])) @ v.slice_normal
        assert abs(d) < 1e-9


def test_labels_resample_nearest_keeps_values():
    a = oblique_affine(spacing=(2.0, 2.0, 6.0))
    lab = np.random.default_rng(1).integers(0, 4, (16, 16, 3)).astype(np.uint8)
    r = resample_inplane(Volume(lab, a), 1.0, 20, Volume(lab, a).center_world, order=0)
    assert r.data.dtype == np.uint8
    assert set(np.unique(r.data)) <= {0, 1, 2, 3}


def test_volume_slices_affine():
    a = oblique_affine()
    v = Volume(np.arange(2 * 2 * 7).reshape(2, 2, 7), a)
    s = v.slices([1, 3, 5])
    for new_k, old_k in enumerate([1, 3, 5]):
        np.testing.assert_allclose(voxel_to_world(s.affine, [1, 0, new_k]), voxel_to_world(a, [1, 0, old_k]))
    np.testing.assert_array_equal(s.data[:, :, 1], v.data[:, :, 3])
