"""The diffusion autoencoder as one module: semantic encoder + conditional decoder UNet."""

from __future__ import annotations

import torch
from torch import nn

from cardiorecon.models.config import DiffAEConfig
from cardiorecon.models.unet import DecoderUNet, SemanticEncoder


class DiffAE(nn.Module):
    """encoder: x0 (B, C, H, W) -> z_sem (B, z_dim); decoder: (x_t, t, z_sem[, morph]) -> eps."""

    def __init__(self, config: DiffAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = SemanticEncoder(c.in_channels, c.encoder_channels, c.channel_mult, c.encoder_res_blocks, c.z_dim)
        self.decoder = DecoderUNet(c.in_channels, c.base_channels, c.channel_mult, c.num_res_blocks,
                                   c.attention_levels, c.z_dim, c.dropout, c.morph_channels, c.morph_level,
                                   extra_full_res=c.morph_source == "labels", extra_norm_split=c.morph_norm == "split")

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder(x0)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """The network in the sampler's form model(x, t, cond); cond is z_sem or (z_sem, morph)."""
        if isinstance(cond, tuple):
            return self.decoder(x_t, t, cond[0], cond[1])
        return self.decoder(x_t, t, cond)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
                morph: torch.Tensor | None = None) -> torch.Tensor:
        """Training forward: eps prediction with z_sem encoded from the clean image (and, for
        DMCVR, the morphology features of the clean image)."""
        return self.decoder(x_t, t, self.encoder(x0), morph)
