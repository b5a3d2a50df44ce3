import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

from cardiorecon.geometry import plane_intersection, point_line_distance, resample, slice_plane
from cardiorecon.io import read_study
from cardiorecon.metrics import ventricular_function, volume_ml
from cardiorecon.phantom import AcquisitionConfig, Anatomy, generate, sample_params, write_subject
from cardiorecon.phantom.acquire import grid_points, profile_offsets, sax_geometry


@pytest.fixture(scope="module", params=["healthy", "heart-failure"])
def subject(request, tmp_path_factory):
    params = sample_params(11, request.param, num_frames=20)
    subj = generate(params, frames=[0, params.es_frame])
    folder = write_subject(subj, tmp_path_factory.mktemp(request.param) / "s")
    return subj, folder


def test_true_ef_and_volumes_match_truth_labels(subject):
    subj, folder = subject
    info = json.loads((folder / "subject.json").read_text())
    study = read_study(folder)
    truth = read_study(folder / "truth_label_sa.nii.gz")  # any NIfTI reads as a Study
    spacing = truth.sax.spacing
    lab = truth.sax.data
    fn = ventricular_function(lab[..., 0], lab[..., 1], spacing)
    for name in ("lv", "rv"):
        assert fn[f"{name}_edv_ml"] == pytest.approx(info[f"{name}_edv_ml"], rel=0.02)
        assert fn[f"{name}_esv_ml"] == pytest.approx(info[f"{name}_esv_ml"], rel=0.02)
        assert fn[f"{name}_ef"] == pytest.approx(100 * info[f"{name}_ef"], abs=1.0)  # EF in %, within 1 %
    lo, hi = (0.55, 0.70) if info["cohort"] == "healthy" else (0.20, 0.40)
    assert lo <= info["lv_ef"] <= hi
    # Myocardial volume is conserved between ED and ES (walls thicken).
    myo = [volume_ml(lab[..., i], 2, spacing) for i in (0, 1)]
    assert myo[1] == pytest.approx(myo[0], rel=0.02)
    assert study.ed_frame == 0 and study.es_frame == info["es_frame"]


def test_blood_brighter_than_myocardium_on_sax_and_lax(subject):
    subj, _ = subject
    for img, lab in [(subj.sax, subj.sax_labels)] + [(subj.lax[v], subj.lax_labels[v]) for v in subj.lax]:
        blood = img.data[(lab.data == 1) | (lab.data == 3)].mean()
        myo = img.data[lab.data == 2].mean()
        assert blood > 1.8 * myo


def test_lax_labels_equal_truth_resampled_on_lax_planes(subject):
    subj, _ = subject
    inter, total = np.zeros(4), np.zeros(4)
    for v, lax_lab in subj.lax_labels.items():
        for i in range(2):
            truth = subj.truth_labels.frame(i)
            on_plane = resample(truth, lax_lab.affine, lax_lab.spatial_shape, order=0).data[..., 0]
            ref = lax_lab.data[:, :, 0, i]
            for c in (1, 2, 3):
                inter[c] += np.logical_and(on_plane == c, ref == c).sum()
                total[c] += (on_plane == c).sum() + (ref == c).sum()
    # Per class over the three views and two frames (single thin slivers make one view's Dice noise).
    dice = 2 * inter[1:] / total[1:]
    assert np.all(dice > 0.9), dice


def test_2ch_and_4ch_intersect_near_the_long_axis(subject):
    subj, _ = subject
    point, direction = plane_intersection(slice_plane(subj.lax["2ch"]), slice_plane(subj.lax["4ch"]))
    base, axis = np.array(subj.info["base_centre_mm"]), np.array(subj.info["long_axis"])
    for s in (0.0, 40.0, 80.0):  # along the whole ventricle
        assert point_line_distance(base + s * axis, point, direction) < 5.0
    assert abs(direction @ axis) > np.cos(np.radians(3))


def test_sax_is_the_slice_profile_average_not_a_point_sample():
    params = dataclasses.replace(sample_params(3, "healthy", num_frames=8), noise_sigma=0.0)
    acq = AcquisitionConfig(psf_sigma_px=0.0)
    subj = generate(params, acq, frames=[0])
    anatomy = Anatomy(params)
    affine, Z = sax_geometry(anatomy, acq)
    M = acq.sax_matrix
    offsets = profile_offsets(acq.slice_thickness_mm, 0.25)  # 4x finer than the generator's
    pts = grid_points(affine, (M, M, Z), offsets).reshape(-1, 3)
    fine = (anatomy.intensity_table()[anatomy.tissue(pts, 0)] * anatomy.modulation(pts)).reshape(Z, len(offsets), M, M)
    averaged = np.moveaxis(fine.mean(axis=1), 0, -1) * acq.scanner_scale
    centre = np.moveaxis(fine[:, len(offsets) // 2], 0, -1) * acq.scanner_scale
    sax = subj.sax.data[..., 0]
    err_avg = np.abs(sax - averaged).mean()
    err_point = np.abs(sax - centre).mean()
    assert err_avg < 0.25 * err_point  # the profile average, not the point sample
    assert err_avg < 5.0  # scanner units, against blood about 1000
    # The same through the written truth: the 8 mm profile average of the dense 2 mm stack.
    k = Z // 2
    truth = subj.truth.data[..., 0]
    window = truth[:, :, 5 * k - 2 : 5 * k + 3].mean(axis=2)
    assert np.abs(sax[:, :, k] - window).mean() < np.abs(sax[:, :, k] - truth[:, :, 5 * k]).mean()


def test_same_seed_gives_identical_bytes(tmp_path):
    acq = AcquisitionConfig(sax_matrix=48, lax_matrix=48)
    params = sample_params(7, "heart-failure", num_frames=4)
    a = write_subject(generate(params, acq, truth=False), tmp_path / "a")
    b = write_subject(generate(params, acq, truth=False), tmp_path / "b")
    for f in sorted(a.iterdir()):
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    c = write_subject(generate(sample_params(8, "heart-failure", num_frames=4), acq, truth=False), tmp_path / "c")
    assert (a / "sa.nii.gz").read_bytes() != (c / "sa.nii.gz").read_bytes()


def test_breath_hold_shifts_move_slices_but_not_the_affine():
    params = sample_params(4, "healthy", num_frames=4)
    acq = AcquisitionConfig(sax_matrix=64, lax_matrix=32, breath_hold_shift_mm=4.0)
    still = generate(params, AcquisitionConfig(sax_matrix=64, lax_matrix=32), truth=False, frames=[0])
    moved = generate(params, acq, truth=False, frames=[0])
    np.testing.assert_allclose(still.sax.affine, moved.sax.affine)
    shifts = np.array(moved.info["breath_hold_shifts_mm"])
    assert shifts.shape == (still.sax.spatial_shape[2], 2) and np.abs(shifts).max() <= 4.0
    # the slice with the largest shift among those that cut the LV cavity (the assertion always runs)
    cavity = [k for k in range(shifts.shape[0]) if (still.sax_labels.data[:, :, k, 0] == 1).sum() > 100]
    assert len(cavity) >= 3
    k = max(cavity, key=lambda k: np.linalg.norm(shifts[k]))
    assert np.linalg.norm(shifts[k]) > 1.5  # large enough to be seen at 1.8 mm pixels
    c_still = ndimage.center_of_mass(still.sax_labels.data[:, :, k, 0] == 1)
    c_moved = ndimage.center_of_mass(moved.sax_labels.data[:, :, k, 0] == 1)
    moved_mm = np.linalg.norm(np.subtract(c_moved, c_still)) * 1.8
    assert moved_mm == pytest.approx(np.linalg.norm(shifts[k]), abs=1.5)


def test_cohorts_differ_in_size_and_function():
    h = [sample_params(s, "healthy") for s in range(20)]
    f = [sample_params(s, "heart-failure") for s in range(20)]
    assert max(p.lv_radius_ed for p in h) < min(p.lv_radius_ed for p in f)
    assert max(p.wall_thickness for p in f) < min(p.wall_thickness for p in h)
    assert all(0.55 <= p.lv_ef <= 0.70 for p in h) and all(0.20 <= p.lv_ef <= 0.40 for p in f)
    axes = np.array([p.long_axis for p in h])
    angles = np.degrees(np.arccos(np.clip(axes @ axes.mean(0) / np.linalg.norm(axes.mean(0)), -1, 1)))
    assert angles.max() > 10  # long-axis direction varies by tens of degrees
