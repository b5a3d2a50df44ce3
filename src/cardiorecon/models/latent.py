"""The latent DDIM's network (DiffAE's MLP with skips over normalised z_sem)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cardiorecon.models.unet import timestep_embedding


@dataclass(frozen=True)
class LatentConfig:
    z_dim: int = 256
    hidden: int = 512
    num_layers: int = 6
    time_dim: int = 64
    num_timesteps: int = 1000


class LatentMLP(nn.Module):
    """eps(z_t, t) for normalised z_sem (B, z_dim); every layer sees the input again (skip) and is
    scaled/shifted by the time embedding. Holds the normalisation statistics as buffers."""

    def __init__(self, config: LatentConfig):
        super().__init__()
        self.config = config
        c = config
        self.time = nn.Sequential(nn.Linear(c.time_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.layers = nn.ModuleList()
        self.films = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(c.num_layers):
            cin = c.z_dim if i == 0 else c.hidden + c.z_dim
            self.layers.append(nn.Linear(cin, c.hidden))
            self.films.append(nn.Linear(c.hidden, 2 * c.hidden))
            self.norms.append(nn.LayerNorm(c.hidden))
        self.out = nn.Linear(c.hidden, c.z_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("z_mean", torch.zeros(c.z_dim))
        self.register_buffer("z_std", torch.ones(c.z_dim))

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.z_mean) / self.z_std

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.z_std + self.z_mean

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.config.time_dim))
        h = z_t
        for i, (layer, film, norm) in enumerate(zip(self.layers, self.films, self.norms)):
            h = layer(h if i == 0 else torch.cat([h, z_t], dim=-1))
            scale, shift = film(emb).chunk(2, dim=-1)
            h = F.silu(norm(h) * (1 + scale) + shift)
        return self.out(h)
