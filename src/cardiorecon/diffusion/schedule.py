"""The DDPM noise schedule as plain data (T = 1000 linear betas, epsilon prediction)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_bar[t] = prod_{s<=t} (1 - beta_s) for t = 0..T-1 (float64, CPU)."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        # The DDPM/DiffAE linear schedule, scaled so that other T keep the same endpoints' meaning.
        scale = 1000 / num_timesteps
        return cls(torch.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=torch.float64))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, dim=0)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (any shape), float32 on t's device."""
        return self.alphas_cumprod.to(t.device)[t.long()].float()

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) eps; x0, eps (B, ...), t (B,)."""
        a = self.alpha_bar(t).view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps


def spaced_timesteps(num_timesteps: int, num_steps: int, depth: float = 1.0) -> list[int]:
    """DiffAE's uniform spacing: [0, D/n, 2D/n, ...] with D = depth * T (ascending, n values,
    first is 0). depth < 1 stops short of pure noise: the code keeps part of the image."""
    if not 0.0 < depth <= 1.0:
        raise ValueError(f"depth must be in (0, 1], got {depth}")
    span = depth * num_timesteps
    if not 1 <= num_steps <= span:
        raise ValueError(f"num_steps must be in 1..{int(span)}, got {num_steps}")
    return [int(i * span / num_steps) for i in range(num_steps)]


def timesteps_to(top: int, num_steps: int) -> list[int]:
    """num_steps timesteps from 0 to `top` inclusive, evenly spaced: decoding a code that
    `ddim_invert` left at timestep `top` with a different number of steps (K-step decoding in LAG)."""
    if num_steps < 1 or top < 0:
        raise ValueError(f"need num_steps >= 1 and top >= 0, got {num_steps}, {top}")
    if num_steps == 1:
        return [top]
    return [int(round(i * top / (num_steps - 1))) for i in range(num_steps)]


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the flattened tensors a and b (B, ...) at alpha in [0, 1].

    Exact at the endpoints; falls back to lerp where a and b are (anti)parallel.
    """
    shape = a.shape
    af, bf = a.reshape(shape[0], -1).float(), b.reshape(shape[0], -1).float()
    alpha_t = torch.as_tensor(alpha, dtype=af.dtype, device=af.device).reshape(-1, 1)
    cos = (af * bf).sum(1, keepdim=True) / (af.norm(dim=1, keepdim=True) * bf.norm(dim=1, keepdim=True)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    sin = torch.sin(theta)
    w_a = torch.sin((1 - alpha_t) * theta) / sin
    w_b = torch.sin(alpha_t * theta) / sin
    lerp_mask = sin.abs() < 1e-6
    w_a = torch.where(lerp_mask, 1 - alpha_t, w_a)
    w_b = torch.where(lerp_mask, alpha_t, w_b)
    out = w_a * af + w_b * bf
    out = torch.where(alpha_t == 0, af, torch.where(alpha_t == 1, bf, out))
    return out.reshape(shape).to(a.dtype)
