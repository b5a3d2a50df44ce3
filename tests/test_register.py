"""The `register` method: symmetric demons interpolation between adjacent slices."""

import numpy as np
import pytest

from cardiorecon.recon.interpolate import interpolate_stack
from cardiorecon.recon.register import displacement, gap_fields, register_labels, register_stack, warp

pytest.importorskip("SimpleITK")


def _blob(shape, centre, radii, blur=1.5):
    """A smooth bright ellipse on a dark background, values in [-1, 1]."""
    from scipy import ndimage

    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    inside = ((ii - centre[0]) / radii[0]) ** 2 + ((jj - centre[1]) / radii[1]) ** 2 <= 1
    return ndimage.gaussian_filter(np.where(inside, 1.0, -1.0), blur).astype(np.float32), inside


def test_middle_slice_of_a_known_smooth_deformation_beats_linear():
    # Slice b is slice a under a smooth deformation (the ellipse grows by 6 px in x and moves by
    # 4 px); the true middle slice is the ellipse halfway.
    a, _ = _blob((64, 64), (30, 32), (8, 10))
    b, _ = _blob((64, 64), (34, 32), (14, 12))
    truth, truth_mask = _blob((64, 64), (32, 32), (11, 11))
    stack = np.stack([a, b], -1)
    reg = register_stack(stack, 2)
    lin = interpolate_stack(stack, 2, "linear")
    err_reg = np.sqrt(np.mean((reg[:, :, 1] - truth) ** 2))
    err_lin = np.sqrt(np.mean((lin[:, :, 1] - truth) ** 2))
    # Measured RMS 0.031 vs 0.142: linear leaves a half-grey ring where the two ellipses differ.
    assert err_reg < 0.4 * err_lin
    assert err_reg < 0.06
    np.testing.assert_array_equal(reg[:, :, 0], a)
    np.testing.assert_array_equal(reg[:, :, 2], b)
    # Labels carried by the same fields (nearest): the middle label is the ellipse halfway.
    labels = np.stack([(a > 0), (b > 0)], -1).astype(np.uint8)
    lab = register_labels(labels, 2, gap_fields(stack))
    dice = 2 * np.sum(lab[:, :, 1] & truth_mask) / (lab[:, :, 1].sum() + truth_mask.sum())
    assert dice > 0.9
    assert set(np.unique(lab)) <= {0, 1}


def test_displacement_recovers_a_translation_and_warp_applies_it():
    a, _ = _blob((48, 48), (24, 24), (7, 9))
    b, _ = _blob((48, 48), (27, 22), (7, 9))  # b is a moved by (+3, -2)
    u = displacement(a, b)  # a(x) ~ b(x + u): u ~ (+3, -2) inside the object
    centre = u[20:29, 20:29].reshape(-1, 2).mean(0)
    np.testing.assert_allclose(centre, [3, -2], atol=0.6)
    np.testing.assert_allclose(warp(b, u), a, atol=0.25)
    # Half-way warps of both neighbours meet in the middle (the symmetric blend).
    mid = register_stack(np.stack([a, b], -1), 2)[:, :, 1]
    expected, _ = _blob((48, 48), (25.5, 23), (7, 9))
    err = np.sqrt(np.mean((mid - expected) ** 2))
    assert err < 0.04 and err < 0.6 * np.sqrt(np.mean((0.5 * (a + b) - expected) ** 2))  # measured 0.026 vs 0.058


def test_flat_slices_and_any_grid_size():
    flat = np.zeros((20, 30, 3), np.float32)
    out = register_stack(flat, 3)
    assert out.shape == (20, 30, 7) and np.all(out == 0)
    a, _ = _blob((40, 96), (20, 40), (6, 8))
    b, _ = _blob((40, 96), (20, 46), (6, 8))
    out = register_stack(np.stack([a, b, a], -1), 4)
    assert out.shape == (40, 96, 9) and np.isfinite(out).all()
