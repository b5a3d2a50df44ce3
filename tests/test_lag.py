"""LAG optimisation on a toy problem whose answer is known: the tests fail if the update goes the
wrong way (a sign flip), if the optimiser never steps, if the caller's model is left frozen, or
if a non-finite loss is not handled."""

import numpy as np
import pytest
import torch
from torch import nn

from cardiorecon.errors import NumericalError
from cardiorecon.recon.lag import LagConfig, optimise
from cardiorecon.recon.latent_interp import GapCodes
from cardiorecon.lax_operator import LaxOperator


class LinearEps(nn.Module):
    """eps(x_t) = w * x_t with w = 0: one DDIM step from timestep `top` decodes x0 = x_T / sqrt(abar_top)
    (clipped to [-1, 1]), a linear map of the code, so the LAX loss is a least-squares problem in x_T.
    `nan_after` calls, the output turns NaN (a model that diverges)."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.config = type("Config", (), {"num_timesteps": 1000})()
        self.calls, self.nan_after = 0, nan_after

    def eps(self, x_t, t, cond):
        self.calls += 1
        out = self.w * x_t + 0.0 * cond.sum()
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out + float("nan")
        return out


def _problem(seed=0):
    """Dense grid 8 x 8 x 5 (identity affine): acquired slices at z = 0, 2, 4, new ones at z = 1, 3.
    A LAX plane x = 3 crosses every slice; its image is a truth whose new slices differ from the seeds."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand((8, 8, 5), generator=g) * 0.6 - 0.3
    acquired = truth[:, :, [0, 2, 4]].clone()
    lax_affine = np.array([[0, 0, 1.0, 3.0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    op = LaxOperator.build(np.eye(4), (8, 8, 5), lax_affine, (8, 5), thickness_mm=0.1, num_samples=1)
    assert op.num_valid == 40
    image = op.sample(truth)
    # Seeds: noise codes far from the truth (x0 = x_T / sqrt(abar) with abar < 1).
    x_T = torch.randn((2, 1, 8, 8), generator=g) * 0.1
    codes = GapCodes(z_sem=torch.zeros((2, 4)), x_T=x_T, left=np.array([0, 1]), alpha=np.array([0.5, 0.5]),
                     out_index=np.array([1, 3]))
    return acquired, codes, {"view": op}, {"view": image}


CONFIG = LagConfig(lambda_cont=0.0, lr=2e-2, max_iterations=40, patience=5, ddim_steps=1, invert_steps=2,
                   depth=0.4, checkpoint=False)


def test_lag_lowers_the_loss_and_raises_the_lax_agreement():
    acquired, codes, ops, images = _problem()
    result = optimise(LinearEps(), acquired, codes, 2, ops, images, CONFIG)
    losses = [h["loss"] for h in result.history]
    # A step in the wrong direction raises the loss; no step leaves it flat (and patience stops at 6).
    assert len(losses) == CONFIG.max_iterations
    assert losses[-1] < 0.3 * losses[0]
    assert all(b < a for a, b in zip(losses[:10], losses[1:11]))
    assert result.agreement_after["view"] > result.agreement_before["view"] + 0.3
    assert result.agreement_after["view"] > 0.9
    # the acquired slices stay as acquired
    np.testing.assert_array_equal(result.dense[:, :, [0, 2, 4]], acquired.numpy())


def test_lax_patience_stops_when_the_lax_agreement_stops_improving():
    acquired, codes, ops, images = _problem()
    # Start away from the seeds with a LAX image the start volume matches exactly: the seed term keeps lowering the
    # loss while every step makes the LAX term worse.
    init = (codes.z_sem + 0.5, codes.x_T + 0.5)
    only_seed = LagConfig(**{**CONFIG.__dict__, "lambda_lax": 0.0, "lambda_seed": 1.0, "max_iterations": 12})
    start = optimise(LinearEps(), acquired, codes, 2, ops, images,
                     LagConfig(**{**only_seed.__dict__, "max_iterations": 1}), init=init)
    images = {"view": ops["view"].sample(torch.from_numpy(start.dense))}
    full = optimise(LinearEps(), acquired, codes, 2, ops, images, only_seed, init=init)
    assert full.iterations == 12 and full.stopped is None
    lax = [h["lax"] for h in full.history]
    assert all(b > a for a, b in zip(lax, lax[1:4]))
    stopped = optimise(LinearEps(), acquired, codes, 2, ops, images,
                       LagConfig(**{**only_seed.__dict__, "lax_patience": 3}), init=init)
    assert stopped.iterations == 4 and "LAX agreement stopped improving" in stopped.stopped


def test_a_refinement_returns_the_volume_its_objective_scored():
    """lag --init register|fusion: with final_decode_steps set, the result is still the kept iteration's
    volume (start + decode(codes) - decode(seeds) at the optimisation's K steps), so its LAX + continuity
    objective is never above the start's."""
    from cardiorecon.diffusion.ddim import ddim_sample
    from cardiorecon.diffusion.schedule import NoiseSchedule, spaced_timesteps
    from cardiorecon.recon.lag import continuity_loss
    from cardiorecon.lax_operator import lax_loss

    acquired, codes, ops, images = _problem()
    model = LinearEps()
    model.w.data.fill_(0.3)  # a model whose decoding depends on the number of steps
    base = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(3)) * 0.4 - 0.2
    codes = GapCodes(codes.z_sem, codes.x_T, codes.left, codes.alpha, codes.out_index, base=base)
    config = LagConfig(**{**CONFIG.__dict__, "lambda_cont": 1.0, "max_iterations": 8, "final_decode_steps": 8})
    result = optimise(model, acquired, codes, 2, ops, images, config)
    assert result.best_iteration > 0
    schedule = NoiseSchedule.linear(1000)
    top = spaced_timesteps(1000, config.invert_steps, config.depth)[-1]
    dec = [ddim_sample(model.eps, x, schedule, config.ddim_steps, cond=z, top=top).detach()
           for z, x in (result.codes, (codes.z_sem, codes.x_T))]
    expected = (base + dec[0] - dec[1])[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(result.dense[:, :, codes.out_index], expected, atol=1e-5)
    dense = torch.from_numpy(result.dense)
    objective = config.lambda_lax * lax_loss(ops["view"], dense, images["view"]) \
        + config.lambda_cont * continuity_loss(dense, codes.out_index)
    assert float(objective) <= result.history[0]["loss"] + 1e-6


def test_a_windowed_refinement_changes_only_its_window():
    """Issue 28 (speed): `LagConfig.window` optimises only the central window of each new slice (codes of that
    crop); outside it the result is the start volume exactly, inside it the LAX agreement still rises."""
    from cardiorecon.recon.latent_interp import centre_window, dense_codes

    acquired, codes, ops, images = _problem()
    assert centre_window((8, 8), 4) == (2, 6, 2, 6) and centre_window((8, 8), 8) is None
    assert centre_window((9, 12), 4) == (2, 6, 4, 8) and centre_window((8, 8), None) is None
    base = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(4)) * 0.4 - 0.2
    box = (2, 6, 2, 6)
    codes = GapCodes(codes.z_sem, codes.x_T[..., 2:6, 2:6].clone(), codes.left, codes.alpha, codes.out_index,
                     base=base, window=box)
    result = optimise(LinearEps(), acquired, codes, 2, ops, images, CONFIG)
    new = result.dense[:, :, codes.out_index]  # (8, 8, 2)
    start = base[:, 0].permute(1, 2, 0).numpy()
    outside = np.ones((8, 8), bool)
    outside[2:6, 2:6] = False
    np.testing.assert_array_equal(new[outside], start[outside])
    assert np.abs(new[2:6, 2:6] - start[2:6, 2:6]).max() > 1e-3
    assert result.agreement_after["view"] > result.agreement_before["view"]
    np.testing.assert_array_equal(result.dense[:, :, [0, 2, 4]], acquired.numpy())
    # dense_codes encodes just the window of the new slices, and keeps the whole slices as the base
    from cardiorecon.models.diffae import DiffAE
    from conftest import micro_config

    model = DiffAE(micro_config()).eval()
    dense = np.random.default_rng(0).uniform(-1, 1, (40, 40, 5)).astype(np.float32)
    gap = dense_codes(model, dense, 2, 2, depth=0.4, window=24)
    assert gap.window == (8, 32, 8, 32) and gap.x_T.shape[-2:] == (24, 24) and gap.base.shape[-2:] == (40, 40)


def test_lag_restores_the_callers_requires_grad():
    acquired, codes, ops, images = _problem()
    model = LinearEps()
    assert model.w.requires_grad
    optimise(model, acquired, codes, 2, ops, images, LagConfig(**{**CONFIG.__dict__, "max_iterations": 2}))
    assert model.w.requires_grad
    model.w.requires_grad_(False)
    optimise(model, acquired, codes, 2, ops, images, LagConfig(**{**CONFIG.__dict__, "max_iterations": 2}))
    assert not model.w.requires_grad


def test_a_non_finite_loss_keeps_the_best_codes_or_fails_clearly():
    acquired, codes, ops, images = _problem()
    # NaN from the start: a clear error, not "cannot unpack non-iterable NoneType"
    with pytest.raises(NumericalError, match="not finite"):
        optimise(LinearEps(nan_after=0), acquired, codes, 2, ops, images, CONFIG)
    # NaN after three decodes: the best finite iterate is kept and the stop is recorded
    result = optimise(LinearEps(nan_after=3), acquired, codes, 2, ops, images, CONFIG)
    assert len(result.history) == 3 and result.stopped and "non-finite" in result.stopped
    assert np.isfinite(result.dense).all()
    assert result.best_iteration == int(np.argmin([h["loss"] for h in result.history]))


def test_the_reconstruct_command_runs_lag_with_the_shipped_speed_settings():
    """What `cardiorecon reconstruct --method lag` runs without lag flags is ReconConfig's default: the refinement
    of register with FAST_LAG (1 differentiable DDIM step, 8-step inversion to 0.4 T, at most 3 iterations, on the
    central 64 px window of each new slice: issue 28's speed settings, measured in docs/BENCHMARKS.md)."""
    import inspect

    from cardiorecon.cli import reconstruction
    from cardiorecon.recon import FAST_LAG, ReconConfig

    params = inspect.signature(reconstruction.reconstruct).parameters
    d = {k: getattr(v.default, "default", v.default) for k, v in params.items()}
    config = reconstruction.recon_config(d["invert_steps"], d["decode_steps"], d["depth"], d["lag_iterations"],
                                         d["lag_steps"], d["init"], d["lag_warm"], d["adapt"], d["lag_window"])
    assert config == ReconConfig()
    assert config.lag_init == "register" and config.lag == FAST_LAG
    assert (FAST_LAG.ddim_steps, FAST_LAG.invert_steps, FAST_LAG.depth, FAST_LAG.max_iterations) == (1, 8, 0.4, 3)
    assert FAST_LAG.window == 64
    whole = reconstruction.recon_config(8, 8, 0.4, None, None, "register", "off", None, 0)
    assert whole.lag.window is None and whole.lag.max_iterations == 3
