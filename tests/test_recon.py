import dataclasses
import warnings

import numpy as np
import pytest
import torch

from cardiorecon.geometry import voxel_to_world
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params
from cardiorecon.recon import ReconConfig, reconstruct, to_native
from cardiorecon.recon.interpolate import interpolate_stack, new_slice_positions
from cardiorecon.recon.lag import LagConfig, continuity_loss
from cardiorecon.recon.latent_interp import diffae_codes, interpolate_codes
from cardiorecon.lax_operator import LaxOperator, lax_loss
from cardiorecon.volume import Study, Volume
from conftest import micro_config, micro_diffae

MICRO = micro_config()
FAST = ReconConfig(invert_steps=2, decode_steps=2, lag=LagConfig(ddim_steps=1, invert_steps=2, max_iterations=2))


@pytest.fixture(scope="module")
def subject():
    params = sample_params(21, "heart-failure", num_frames=6)
    return generate(params, AcquisitionConfig(), frames=[0, params.es_frame])


@pytest.fixture(scope="module")
def study(subject):
    return Study(subject.sax, subject.lax, subject.sax_labels, subject.lax_labels, 0, 1, {"source": "phantom"})


@pytest.fixture(scope="module")
def micro():
    return micro_diffae(MICRO)


def test_lax_operator_reproduces_the_phantom_lax_labels(subject):
    truth = subject.truth_labels
    inter, total = np.zeros(4), np.zeros(4)
    for view, labels in subject.lax_labels.items():
        op = LaxOperator.build(truth.affine, truth.spatial_shape, labels.affine, labels.spatial_shape[:2])
        for i in range(2):
            sampled = op.sample(torch.from_numpy(truth.data[..., i].astype(np.float32)), mode="nearest").numpy()
            ref = labels.data[:, :, 0, i]
            for c in (1, 2, 3):
                inter[c] += ((sampled == c) & (ref == c)).sum()
                total[c] += (sampled == c).sum() + (ref == c).sum()
    # Dice per class over the three views and two frames: a thin (5 mm) failing-heart wall on a
    # 1.8 x 1.8 x 2 mm grid sampled by nearest neighbour costs a few points in any single view.
    dice = 2 * inter[1:] / total[1:]
    assert np.all(dice > 0.9), dice


def test_lax_operator_returns_a_linear_function_of_world_coordinates(subject):
    truth = subject.truth
    shape = truth.spatial_shape
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = voxel_to_world(truth.affine, ijk)
    f = lambda p: 0.3 * p[..., 0] - 0.2 * p[..., 1] + 0.1 * p[..., 2] + 5.0  # noqa: E731
    for view in subject.lax.values():
        op = LaxOperator.for_view(truth.affine, shape, view, num_samples=4)
        assert 0 < op.num_valid < np.prod(op.shape)
        H, W = op.shape
        ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        expected = f(voxel_to_world(view.affine, np.stack([ii, jj, 0 * ii], -1)))
        got = op.sample(torch.from_numpy(f(xyz)).double()).numpy()
        # float32 sampling grid: relative 1e-6 of coordinates of about 100 mm
        np.testing.assert_allclose(got[op.valid.numpy()], expected[op.valid.numpy()], atol=1e-4)


def test_lax_loss_is_zero_not_nan_without_valid_pixels():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    far = np.diag([2.0, 2.0, 6.0, 1.0])
    far[:3, 3] = [0, 0, 500.0]
    op = LaxOperator.build(affine, (8, 8, 8), far, (8, 8))
    assert op.num_valid == 0
    vol = torch.rand(8, 8, 8, requires_grad=True)
    loss = lax_loss(op, vol, torch.rand(8, 8))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.all(vol.grad == 0)


def test_interpolation_keeps_acquired_slices_and_new_positions():
    stack = np.random.default_rng(0).random((5, 4, 6)).astype(np.float32)
    for method in ("nearest", "linear", "cubic"):
        out = interpolate_stack(stack, 5, method)
        assert out.shape == (5, 4, 26)
        np.testing.assert_array_equal(out[:, :, ::5], stack)
    ks, alphas, idx = new_slice_positions(6, 5)
    assert 0.0 not in alphas and 1.0 not in alphas  # never a copy of an acquired slice
    assert list(alphas[:4]) == [0.2, 0.4, 0.6, 0.8] and list(idx[:4]) == [1, 2, 3, 4]
    lin = interpolate_stack(stack, 5, "linear")
    np.testing.assert_allclose(lin[:, :, 2], 0.6 * stack[:, :, 0] + 0.4 * stack[:, :, 1], rtol=1e-6)


@pytest.mark.parametrize("method", ["linear", "cubic", "diffae"])
def test_acquired_slices_come_back_unchanged_at_their_world_positions(study, micro, method):
    rec = reconstruct(study, method, factor=5, frames="ed", model=micro if method == "diffae" else None,
                      config=FAST)
    grid = rec.grid.image
    Z = grid.spatial_shape[2]
    assert rec.volume.spatial_shape[2] == (Z - 1) * 5 + 1
    for k in range(Z):
        np.testing.assert_allclose(voxel_to_world(rec.volume.affine, [3, 7, 5 * k]),
                                   voxel_to_world(grid.affine, [3, 7, k]), atol=1e-9)
        np.testing.assert_array_equal(rec.normalised.data[:, :, 5 * k, 0], grid.data[:, :, k, 0])
    # Native output overlays the input: acquired slice planes of the input grid.
    native = to_native(rec, study)
    assert native.spatial_shape[:2] == study.sax.spatial_shape[:2]
    np.testing.assert_allclose(voxel_to_world(native.affine, [0, 0, 10]), voxel_to_world(study.sax.affine, [0, 0, 2]))


def test_factor_from_target_spacing(study):
    rec = reconstruct(study, "linear", spacing_mm=2.0, frames=[0, 1])
    assert rec.factor == 5 and rec.volume.num_frames == 2
    np.testing.assert_allclose(rec.volume.spacing[2], 2.0)


def test_gradients_of_the_lax_loss_reach_x_T_and_z_sem(study, micro):
    from cardiorecon.diffusion import NoiseSchedule, ddim_sample
    from cardiorecon.recon.latent_interp import assemble
    from cardiorecon.recon.guidance import guiding_views

    rec = reconstruct(study, "linear", factor=5, frames="ed", model=micro, config=FAST)
    acquired, codes = diffae_codes(micro, rec.grid.image.data[..., 0], 5, invert_steps=2)
    ops = guiding_views(study, rec.grid, 5, None, 3, [])
    z = codes.z_sem.clone().requires_grad_(True)
    x_T = codes.x_T.clone().requires_grad_(True)
    new = ddim_sample(micro.eps, x_T, NoiseSchedule.linear(), 2, cond=z, checkpoint=True)
    dense = assemble(acquired[:, 0].permute(1, 2, 0), new, codes, 5)
    img = torch.from_numpy(study.lax["4ch"].data[:, :, 0, 0]).float()
    loss = lax_loss(ops["4ch"], dense, img)
    gx, gz = torch.autograd.grad(loss, (x_T, z))
    assert gx.abs().sum() > 0 and gz.abs().sum() > 0
    assert continuity_loss(dense, codes.out_index).item() > 0


def test_interpolated_codes_run_from_one_acquired_code_to_the_next():
    """Every new slice's codes: z_sem = (1 - a) z_k + a z_k+1 and x_T the slerp of x_k, x_k+1 at its own
    alpha (a swap of the two sides or of alpha and 1 - alpha fails here), nearer the nearer acquired slice."""
    torch.manual_seed(0)
    z = torch.randn(3, 4)
    x = torch.randn(3, 1, 2, 2)
    codes = interpolate_codes(z, x, factor=4)
    assert codes.z_sem.shape == (6, 4) and list(codes.out_index) == [1, 2, 3, 5, 6, 7]
    assert list(codes.left) == [0, 0, 0, 1, 1, 1] and list(codes.alpha) == [0.25, 0.5, 0.75] * 2
    for n, (k, a) in enumerate(zip(codes.left, codes.alpha)):
        torch.testing.assert_close(codes.z_sem[n], float(1 - a) * z[k] + float(a) * z[k + 1])
        x0, x1 = x[k].flatten().double(), x[k + 1].flatten().double()
        theta = torch.arccos(torch.dot(x0, x1) / (x0.norm() * x1.norm()))
        expected = (torch.sin((1 - a) * theta) * x0 + torch.sin(a * theta) * x1) / torch.sin(theta)
        torch.testing.assert_close(codes.x_T[n].flatten().double(), expected, rtol=1e-4, atol=1e-5)
    # at the ends of a gap (alpha 1/100 and 99/100) the codes are almost the acquired ones
    fine = interpolate_codes(z, x, factor=100)
    for n, k in ((0, 0), (98, 1)):
        assert (fine.z_sem[n] - z[k]).norm() < 0.02 * (z[1] - z[0]).norm()
        assert (fine.x_T[n] - x[k]).norm() < 0.05 * (x[1] - x[0]).norm()


@pytest.mark.parametrize("init", ["register", "diffae"])
def test_lag_without_lax_falls_back_to_its_start_with_a_warning(study, micro, init):
    """lag refines register by default (ReconConfig.lag_init); with no guiding view it returns its start."""
    no_lax = Study(study.sax, {}, study.sax_labels, {}, 0, 1, {"source": "phantom"})
    config = FAST if init == "register" else dataclasses.replace(FAST, lag_init=init)
    with pytest.warns(UserWarning, match=f"falls back to {init}"):
        rec = reconstruct(no_lax, "lag", factor=5, frames="ed", model=micro, config=config)
    ref = reconstruct(no_lax, init, factor=5, frames="ed", model=micro, config=FAST)
    np.testing.assert_allclose(rec.normalised.data, ref.normalised.data, atol=1e-5)


def test_a_lax_view_that_misses_the_stack_is_named_and_skipped(study, micro):
    away = study.lax["2ch"].affine.copy()
    away[:3, 3] += 400 * study.lax["2ch"].slice_normal
    lax = dict(study.lax)
    lax["2ch"] = Volume(study.lax["2ch"].data, away, study.lax["2ch"].meta)
    moved = Study(study.sax, lax, None, {}, 0, 1, {"source": "phantom"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = reconstruct(moved, "lag", factor=5, frames="ed", model=micro, config=FAST)
    assert any("'2ch'" in str(w.message) and "skipped" in str(w.message) for w in caught)
    assert sorted(rec.lax_views) == ["3ch", "4ch"]
    assert rec.lag[0].iterations >= 1 and np.isfinite(rec.lag[0].history[0]["loss"])
