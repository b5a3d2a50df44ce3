"""Training the latent DDIM on the z_sem of every training slice (a small MLP: a plain loop)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.diffusion import NoiseSchedule
from cardiorecon.models.config import save_weights
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.latent import LatentConfig, LatentMLP


@torch.no_grad()
def encode_bank(model: DiffAE, bank: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """z_sem of every slice of `bank` (N, H, W) -> (N, z_dim)."""
    model.eval()
    out = []
    for i in range(0, len(bank), batch_size):
        x = torch.from_numpy(bank[i:i + batch_size].astype(np.float32)).unsqueeze(1)
        out.append(model.encode(x))
    return torch.cat(out)


def train_latent(z: torch.Tensor, out: str | Path, steps: int = 4000, batch_size: int = 256, lr: float = 1e-4,
                 seed: int = 0, config: LatentConfig | None = None) -> LatentMLP:
    """Fit the latent DDIM to the codes `z` (N, z_dim); write `out`.safetensors/.json."""
    torch.manual_seed(seed)
    config = config or LatentConfig(z_dim=z.shape[1])
    net = LatentMLP(config)
    net.z_mean.copy_(z.mean(0))
    net.z_std.copy_(z.std(0).clamp_min(1e-6))
    zn = net.normalise(z)
    schedule = NoiseSchedule.linear(config.num_timesteps)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        idx = torch.randint(len(zn), (batch_size,), generator=g)
        t = torch.randint(0, config.num_timesteps, (batch_size,), generator=g)
        eps = torch.randn(batch_size, config.z_dim, generator=g)
        loss = F.mse_loss(net(schedule.add_noise(zn[idx], eps, t), t), eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 500 == 0:
            print(f"  latent step {step}/{steps} loss {np.mean(losses[-500:]):.4f} "
                  f"({step / (time.perf_counter() - t0):.1f} steps/s)", flush=True)
    save_weights(net, config, out, extra={"steps": steps, "final_loss": float(np.mean(losses[-500:]))})
    return net
