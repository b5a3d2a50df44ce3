import numpy as np
import pytest
import torch

from cardiorecon.metrics import SegmentationMetric, dice, ejection_fraction, hd95, masked_ncc, volume_ml
from cardiorecon.metrics.seg import surface_distances


def _square(shape=(40, 40), lo=(10, 10), hi=(20, 20)):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1]] = True
    return m


def test_identical_masks():
    m = _square()
    assert dice(m, m) == 1.0
    assert hd95(m, m, (1.0, 1.0)) == 0.0


def test_disjoint_masks():
    a, b = _square(lo=(0, 0), hi=(5, 5)), _square(lo=(30, 30), hi=(35, 35))
    assert dice(a, b) == 0.0
    # nearest surface points (4, 4) and (30, 30): 26 * sqrt(2); the farthest ones are 34 * sqrt(2) away
    assert 26 * np.sqrt(2) <= hd95(a, b, 1.0) <= 34 * np.sqrt(2)


def test_empty_masks_are_not_scored_as_agreement():
    """Issue 29: two empty masks were Dice 1 / HD95 0, and an empty prediction HD95 = the image diagonal
    (219 mm), both averaged into the tables. Now: undefined (NaN), said by overlap_scores, skipped by means."""
    from cardiorecon.metrics.seg import overlap_scores

    a, empty = _square(), np.zeros((40, 40), bool)
    assert dice(a, empty) == 0.0 and dice(empty, a) == 0.0 and np.isnan(dice(empty, empty))
    assert np.isnan(hd95(empty, empty, (1.0, 2.0)))
    assert np.isnan(hd95(a, empty, (1.0, 2.0))) and np.isnan(hd95(empty, a, (1.0, 2.0)))
    d, h, why = overlap_scores(empty, a, 1.0)
    assert (d, why) == (0.0, "empty prediction") and np.isnan(h)
    d, h, why = overlap_scores(a, empty, 1.0)
    assert (d, why) == (0.0, "empty reference") and np.isnan(h)
    d, h, why = overlap_scores(empty, empty, 1.0)
    assert np.isnan(d) and np.isnan(h) and why == "absent from both"
    assert overlap_scores(a, a, 1.0) == (1.0, 0.0, "")
    acc = SegmentationMetric(structures={"lv": 1})
    acc.update(a.astype(np.uint8), a.astype(np.uint8), 1.0)
    acc.update(np.zeros_like(a, np.uint8), np.zeros_like(a, np.uint8), 1.0)  # absent from both: not averaged
    assert acc.summary()["lv"]["dice"] == (1.0, 0.0) and acc.summary()["lv"]["hd95"] == (0.0, 0.0)


def test_anisotropic_spacing_scales_hd95_as_by_hand():
    # Two parallel one-voxel-thick lines 3 voxels apart along axis 0: every surface point of
    # one is exactly 3 voxels from the other, so HD95 = 3 * spacing along axis 0.
    a, b = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    a[5, 5:25], b[8, 5:25] = True, True
    assert hd95(a, b, (1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (2.0, 1.0)) == pytest.approx(6.0)
    assert hd95(a, b, (1.0, 2.0)) == pytest.approx(3.0)
    assert dice(a, b) == 0.0


def test_hd95_agrees_with_monai():
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((24, 28, 12)), 2.5) > 0.5
    b = ndimage.gaussian_filter(rng.random((24, 28, 12)), 2.5) > 0.5
    a[:, :, 0], b[:, :, -1] = False, False
    assert a.any() and b.any()
    spacing = (1.8, 1.8, 10.0)
    ours = hd95(a, b, spacing)
    t = lambda m: torch.from_numpy(m)[None, None].float()  # noqa: E731
    theirs = float(compute_hausdorff_distance(t(a), t(b), percentile=95, spacing=spacing)[0, 0])
    assert ours == pytest.approx(theirs, rel=1e-5)
    da, db = surface_distances(a, b, spacing)
    assert len(da) and len(db)


def test_volumes_ef_and_accumulator():
    lab = np.zeros((10, 10, 4), np.uint8)
    lab[2:7, 2:7, 1:3] = 1  # 50 voxels
    assert volume_ml(lab, 1, (2.0, 2.0, 5.0)) == pytest.approx(50 * 20 / 1000)
    assert ejection_fraction(100.0, 40.0) == pytest.approx(60.0)
    assert np.isnan(ejection_fraction(0.0, 0.0))
    acc = SegmentationMetric()
    acc.update(lab, lab, (1.0, 1.0, 1.0))
    other = lab.copy()
    other[other == 1] = 0
    acc.update(other, lab, (1.0, 1.0, 1.0))
    s = acc.summary()
    assert s["lv_cavity"]["dice"] == pytest.approx((0.5, 0.5))
    assert all(np.isnan(v) for v in s["rv_cavity"]["dice"])  # absent in both: not scored (issue 29)


def test_masked_ncc_is_nan_free():
    a = np.arange(16.0).reshape(4, 4)
    assert masked_ncc(a, 2 * a + 1, np.ones((4, 4), bool)) == pytest.approx(1.0)
    assert masked_ncc(a, a, np.zeros((4, 4), bool)) == 0.0
    assert masked_ncc(np.ones((4, 4)), a, np.ones((4, 4), bool)) == 0.0


def test_hd95_is_the_95th_percentile_not_the_maximum():
    # b is a plus one stray voxel 30 voxels away: 100 of b's 101 surface voxels lie on a, so the 95th
    # percentile of b -> a is 0 (and a -> b is all 0); the maximum Hausdorff distance is 30 voxels.
    a = np.zeros((40, 110), bool)
    a[5, 5:105] = True
    b = a.copy()
    b[35, 50] = True
    assert hd95(a, b, (1.0, 1.0)) == pytest.approx(0.0)
    assert hd95(a, b, (0.7, 2.0)) == pytest.approx(0.0)
    d_ab, d_ba = surface_distances(a, b, (0.7, 2.0))
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(30 * 0.7)  # the maximum, which HD95 must not return


def test_hd95_against_brute_force_pairwise_distances_with_anisotropic_spacing():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    a = ndimage.gaussian_filter(rng.random((30, 26)), 2.0) > 0.52
    b = ndimage.gaussian_filter(rng.random((30, 26)), 2.0) > 0.52
    spacing = np.array([1.3, 2.1])

    def surface_points(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, border_value=0)) * spacing

    pa, pb = surface_points(a), surface_points(b)
    d = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    maximum = max(d.min(1).max(), d.min(0).max())
    assert maximum > expected + 1.0  # the case tells the two apart
    assert hd95(a, b, spacing) == pytest.approx(expected, abs=1e-9)
