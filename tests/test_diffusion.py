import math

import pytest
import torch

from cardiorecon.diffusion import NoiseSchedule, ddim_invert, ddim_sample, slerp, spaced_timesteps
from cardiorecon.models.config import DiffAEConfig
from cardiorecon.models.diffae import DiffAE

SCHEDULE = NoiseSchedule.linear(1000)


def gaussian_eps_model(mu: float, sigma: float):
    """The exact noise predictor E[eps | x_t] for data x0 ~ N(mu, sigma^2 I)."""
    def model(x, t, cond=None):
        a = SCHEDULE.alpha_bar(t).view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * sigma**2 + 1 - a)
    return model


def test_schedule_is_monotone_and_has_the_ddpm_endpoints():
    ac = SCHEDULE.alphas_cumprod
    assert SCHEDULE.num_timesteps == 1000
    assert torch.all(ac[1:] < ac[:-1]) and torch.all(SCHEDULE.betas[1:] > SCHEDULE.betas[:-1])
    assert SCHEDULE.betas[0].item() == pytest.approx(1e-4) and SCHEDULE.betas[-1].item() == pytest.approx(0.02)
    assert ac[-1].item() < 1e-4
    assert spaced_timesteps(1000, 20) == list(range(0, 1000, 50))


def test_add_noise_matches_the_formula():
    x0, eps, t = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0), torch.tensor([0, 999])
    a = SCHEDULE.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(SCHEDULE.add_noise(x0, eps, t), (a.sqrt() + 2 * (1 - a).sqrt()).expand(2, 1, 2, 2))


def test_invert_then_decode_returns_the_input_and_converges_with_steps():
    torch.manual_seed(0)
    model = gaussian_eps_model(0.2, 0.3)
    x0 = 0.2 + 0.3 * torch.randn(4, 1, 8, 8)
    rms = {}
    for steps in (50, 100, 250):
        x_T = ddim_invert(model, x0, SCHEDULE, steps, clip_x0=False)
        assert 0.8 < x_T.std().item() < 1.2  # x_T of Gaussian data is about standard normal
        back = ddim_sample(model, x_T, SCHEDULE, steps, clip_x0=False)
        rms[steps] = (back - x0).square().mean().sqrt().item()
    # DDIM is a first-order solver: the round-trip error falls about in proportion to 1/steps.
    assert rms[100] < 0.03 and rms[250] < 0.01
    assert rms[250] < 0.6 * rms[100] < 0.6 * rms[50]


def test_decode_is_differentiable_in_x_T_and_z_sem_with_checkpointing():
    cfg = DiffAEConfig(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), encoder_channels=8, z_dim=16,
                       image_size=16)
    torch.manual_seed(0)
    model = DiffAE(cfg)
    # Zero-initialised output convs make eps independent of the input at start; perturb them.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_T = torch.randn(2, 1, 16, 16, requires_grad=True)
    z = torch.randn(2, 16, requires_grad=True)
    for ckpt in (False, True):
        out = ddim_sample(model.eps, x_T, SCHEDULE, 3, cond=z, checkpoint=ckpt)
        gx, gz = torch.autograd.grad(out.square().mean(), (x_T, z))
        assert gx.abs().sum() > 0 and gz.abs().sum() > 0


def test_checkpointed_gradients_equal_plain_ones():
    cfg = DiffAEConfig(base_channels=8, channel_mult=(1, 2), attention_levels=(), encoder_channels=8, z_dim=8)
    torch.manual_seed(1)
    model = DiffAE(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_T, z = torch.randn(1, 1, 8, 8, requires_grad=True), torch.randn(1, 8, requires_grad=True)
    g = [torch.autograd.grad(ddim_sample(model.eps, x_T, SCHEDULE, 3, cond=z, checkpoint=c).sum(), (x_T, z))
         for c in (False, True)]
    torch.testing.assert_close(g[0][0], g[1][0])
    torch.testing.assert_close(g[0][1], g[1][1])


def test_slerp_endpoints_and_norm():
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0]])
    mid = slerp(a, b, 0.5)
    assert mid.norm().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5), 0.0]]))
    x, y = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    assert torch.equal(slerp(x, y, 0.0), x) and torch.equal(slerp(x, y, 1.0), y)
    # Per-sample alphas; parallel vectors fall back to lerp without NaN
    out = slerp(a.repeat(2, 1), a.repeat(2, 1) * 2, torch.tensor([0.25, 0.75]))
    assert torch.isfinite(out).all()


def test_partial_depth_inversion_round_trip_and_k_step_decoding_from_the_same_level():
    from cardiorecon.diffusion.schedule import timesteps_to

    assert spaced_timesteps(1000, 8, depth=0.4) == [0, 50, 100, 150, 200, 250, 300, 350]
    assert timesteps_to(350, 8) == spaced_timesteps(1000, 8, depth=0.4)
    assert timesteps_to(350, 2) == [0, 350] and timesteps_to(350, 1) == [350]
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 8, depth=0.0)
    torch.manual_seed(1)
    model = gaussian_eps_model(0.2, 0.3)
    x0 = 0.2 + 0.3 * torch.randn(4, 1, 8, 8)
    code = ddim_invert(model, x0, SCHEDULE, 100, clip_x0=False, depth=0.4)
    a = SCHEDULE.alphas_cumprod[spaced_timesteps(1000, 100, 0.4)[-1]].item()
    # a partial code keeps sqrt(alpha_bar) of the image: its mean is sqrt(a) * mu, not 0
    assert code.mean().item() == pytest.approx(math.sqrt(a) * 0.2, abs=0.05)
    back = ddim_sample(model, code, SCHEDULE, 100, clip_x0=False, depth=0.4)
    assert (back - x0).square().mean().sqrt().item() < 0.01
    # decoding the same code in fewer steps starts from the same timestep (top): still close
    top = spaced_timesteps(1000, 100, 0.4)[-1]
    few = ddim_sample(model, code, SCHEDULE, 10, clip_x0=False, top=top)
    err = (few - x0).square().mean().sqrt().item()
    assert err < 0.08
