"""Deterministic DDIM (eta = 0): one step, a sample loop and an inversion loop.

The network is an argument: `model(x_t, t, cond) -> eps`. Nothing here runs under no_grad, so
decoding can be backpropagated to x_T and the condition; `checkpoint=True` recomputes each step
in the backward pass instead of storing its activations.

Timesteps t_0 = 0 < t_1 < ... < t_{n-1} with levels a_i = alpha_bar[t_i]; the clean image sits at
level 1. Sampling step i maps level a_i to a_{i-1} (a_{-1} = 1) with eps(x, t_i); inversion step i
maps level a_{i-1} to a_i with eps(x, t_i): the two use the same timestep, so inverting then
decoding with the same n differs only by where eps is evaluated.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from cardiorecon.diffusion.schedule import NoiseSchedule, spaced_timesteps, timesteps_to

EpsModel = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def ddim_step(model: EpsModel, x: torch.Tensor, t: int, level_from: float, level_to: float, cond: Any = None,
              clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Move x from noise level alpha_bar = level_from to level_to along the DDIM ODE.

    Returns (x at level_to, predicted x0). With clip_x0 the predicted x0 is clipped to [-1, 1]
    and eps recomputed from it (as DiffAE does).
    """
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = model(x, t_batch, cond).float()
    x = x.float()
    if level_from >= 1.0:
        x0 = x
    else:
        x0 = (x - (1 - level_from) ** 0.5 * eps) / level_from**0.5
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x - level_from**0.5 * x0) / (1 - level_from) ** 0.5
    return level_to**0.5 * x0 + (1 - level_to) ** 0.5 * eps, x0


def _levels(schedule: NoiseSchedule, timesteps: list[int]) -> list[float]:
    ac = schedule.alphas_cumprod
    return [float(ac[t]) for t in timesteps]


def ddim_sample(model: EpsModel, x_T: torch.Tensor, schedule: NoiseSchedule, num_steps: int, cond: Any = None,
                clip_x0: bool = True, checkpoint: bool = False,
                callback: Callable[[int, torch.Tensor], None] | None = None, depth: float = 1.0,
                top: int | None = None) -> torch.Tensor:
    """Decode x_T (B, C, H, W) to x0 in `num_steps` deterministic DDIM steps (differentiable);
    `depth` < 1: x_T is a code at timestep ~depth * T (as written by `ddim_invert` with that depth).
    `top`: the code's timestep when it was inverted with another number of steps (then the
    num_steps timesteps run evenly from `top` down to 0)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, depth) if top is None else \
        timesteps_to(top, num_steps)
    levels = _levels(schedule, timesteps)
    x = x_T
    for i in reversed(range(num_steps)):
        level_to = levels[i - 1] if i > 0 else 1.0
        args = (model, x, timesteps[i], levels[i], level_to, cond, clip_x0)
        if checkpoint and torch.is_grad_enabled():
            x, _ = _checkpoint(ddim_step, *args, use_reentrant=False)
        else:
            x, _ = ddim_step(*args)
        if callback is not None:
            callback(num_steps - i, x)
    return x


def ddim_invert(model: EpsModel, x0: torch.Tensor, schedule: NoiseSchedule, num_steps: int, cond: Any = None,
                clip_x0: bool = True, checkpoint: bool = False,
                callback: Callable[[int, torch.Tensor], None] | None = None, depth: float = 1.0) -> torch.Tensor:
    """Encode a clean x0 (B, C, H, W) to the stochastic code x_T by running DDIM backwards
    (up to timestep ~depth * T; 1 = all the way to noise, as DiffAE)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, depth)
    levels = _levels(schedule, timesteps)
    x = x0
    for i in range(num_steps):
        level_from = levels[i - 1] if i > 0 else 1.0
        args = (model, x, timesteps[i], level_from, levels[i], cond, clip_x0)
        if checkpoint and torch.is_grad_enabled():
            x, _ = _checkpoint(ddim_step, *args, use_reentrant=False)
        else:
            x, _ = ddim_step(*args)
        if callback is not None:
            callback(i + 1, x)
    return x
