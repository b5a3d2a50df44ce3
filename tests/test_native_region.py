"""Issue 12: the heart region from the images alone, and native output over the whole field of view."""

import numpy as np
import pytest

from cardiorecon.autoencoder import prepare_study
from cardiorecon.geometry import world_to_voxel, voxel_to_world
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params
from cardiorecon.preprocess import heart_region, region_share
from cardiorecon.recon import reconstruct
from cardiorecon.recon.pipeline import seam_weight, to_native
from cardiorecon.volume import Study, Volume


@pytest.fixture(scope="module")
def subject():
    params = sample_params(33, "heart-failure", num_frames=8)
    return generate(params, AcquisitionConfig(), frames=[0, params.es_frame, 4])


def _study(subject, pad=(0, 0), lax=True):
    """The phantom study with its SAX field of view padded by zeros after the image (pad voxels along
    i and j): the heart moves off the image centre, the world geometry does not change."""
    sax, lab = subject.sax, subject.sax_labels
    if any(pad):
        width = ((0, pad[0]), (0, pad[1]), (0, 0), (0, 0))
        sax = Volume(np.pad(sax.data, width), sax.affine, sax.meta)
        lab = Volume(np.pad(lab.data, width), lab.affine, lab.meta)
    return Study(sax, dict(subject.lax) if lax else {}, lab, {}, 0, 1, {"source": "phantom"})


@pytest.mark.parametrize("lax", [True, False])
def test_off_centre_heart_lies_wholly_inside_the_region(subject, lax):
    study = _study(subject, pad=(110, 90), lax=lax)
    centre_of_image = study.sax.center_world
    heart = voxel_to_world(study.sax.affine, np.argwhere(study.sax_labels.data > 0)[:, :3].mean(0))
    assert np.linalg.norm((centre_of_image - heart)[:2]) > 60  # far from the image centre
    region = heart_region(study)
    assert region.source.startswith("motion")
    assert region_share(region, study.sax_labels) == 1.0  # labels only score the region here
    # ... and the working grid that every method uses holds every labelled voxel.
    grid = prepare_study(study, 2.0, 64)
    inside = world_to_voxel(grid.image.affine, voxel_to_world(study.sax.affine,
                                                              np.argwhere(study.sax_labels.data > 0)[:, :3]))
    n = grid.image.spatial_shape[0]
    assert np.all((inside[:, :2] >= 0) & (inside[:, :2] <= n - 1))


def test_region_ignores_reference_labels(subject):
    """Moving the labels does not move the region: it is found from the images."""
    study = _study(subject)
    moved = Study(study.sax, study.lax, study.sax_labels.with_data(np.roll(study.sax_labels.data, 30, axis=0)),
                  {}, 0, 1, {})
    a, b = heart_region(study), heart_region(moved)
    np.testing.assert_allclose(a.centre, b.centre)
    assert a.size_mm == b.size_mm


def _check_native(study, frames, factor=2):
    rec = reconstruct(study, "linear", factor=factor, frames=frames, align="off")
    native = to_native(rec, study)
    X, Y, Z = study.sax.spatial_shape
    assert native.spatial_shape == (X, Y, (Z - 1) * factor + 1)
    for i, t in enumerate(frames):
        np.testing.assert_array_equal(native.data[:, :, ::factor, i], study.sax.data[..., t])
        # new slices: nothing blank where both acquired neighbours hold signal
        both = (study.sax.data[:, :, :-1, t] != 0) & (study.sax.data[:, :, 1:, t] != 0)
        assert np.all(native.data[:, :, 1::factor, i][both] != 0)
    return rec, native


def test_native_output_keeps_acquired_slices_and_fills_the_field_of_view(subject):
    study = _study(subject, pad=(40, 0))
    rec, native = _check_native(study, [0, 1])
    # Outside the working grid the new slices are linear interpolation of the input.
    w = seam_weight(rec.volume.affine, rec.volume.spatial_shape[:2], native.affine, native.spatial_shape[:2])
    assert (w == 0).any() and (w == 1).any()
    lin = 0.5 * (study.sax.data[:, :, :-1, 0] + study.sax.data[:, :, 1:, 0])
    np.testing.assert_allclose(native.data[:, :, 1::2, 0][w == 0], lin[w == 0], rtol=1e-5, atol=1e-3)


def test_native_output_on_a_real_study(shared_data):
    from cardiorecon.io import read_study

    study = read_study(shared_data / "sunnybrook" / "SCD0000101")
    _check_native(study, [0])
