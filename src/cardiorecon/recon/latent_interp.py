"""Latent interpolation between adjacent acquired slices (the `diffae` and `dmcvr` methods).

Encode every acquired slice (z_sem by the encoder, x_T by DDIM inversion); for each gap place f-1
new slices at alpha = j/f, j = 1..f-1 (never alpha = 0: no copy of the left slice), lerp z_sem,
slerp x_T, and decode all new slices of all gaps as one batch.

`dmcvr` is the same with a morphology-conditioned decoder (models/dmcvr.py): the acquired slices'
morphology features (from the segmentation network's view of each slice) condition the inversion
and are lerped like z_sem; nothing is optimised at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cardiorecon.autoencoder import decode, encode
from cardiorecon.diffusion import slerp
from cardiorecon.models.diffae import DiffAE
from cardiorecon.recon.interpolate import new_slice_positions
from cardiorecon.recon.registry import ReconMethod, Work, register_method


@dataclass
class GapCodes:
    """Seeds of the new slices: z_sem (N, z_dim), x_T (N, 1, H, W), and where they go."""

    z_sem: torch.Tensor
    x_T: torch.Tensor
    left: np.ndarray  # acquired slice index on the left of each new slice
    alpha: np.ndarray  # position in its gap, in (0, 1)
    out_index: np.ndarray  # slice index in the dense stack
    morph: torch.Tensor | None = None  # DMCVR's morphology features (N, C, h, w)
    # the new slices of the volume the codes were encoded from (`dense_codes`: lag --init register or
    # fusion), (N, 1, H, W): lag then refines that volume by the change of the decoded codes (residual)
    base: torch.Tensor | None = None
    # (r0, r1, c0, c1): the codes describe only this in-plane window of the new slices (`dense_codes(...,
    # window=)`: lag refines the heart region and keeps the start volume outside it); None: the whole slice
    window: tuple[int, int, int, int] | None = None


def lerp(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(1 - alpha) a + alpha b per row (alpha (N,)); exactly a at alpha = 0 and b at alpha = 1."""
    w = alpha.to(device=a.device, dtype=a.dtype).reshape(-1, *([1] * (a.ndim - 1)))
    return (1 - w) * a + w * b


def interpolate_codes(z_sem: torch.Tensor, x_T: torch.Tensor, factor: int,
                      morph: torch.Tensor | None = None) -> GapCodes:
    """Codes of the f-1 new slices in every gap from the acquired slices' codes (Z, ...)."""
    ks, alphas, idx = new_slice_positions(len(z_sem), factor)
    k = torch.from_numpy(ks)
    a = torch.from_numpy(alphas).float()
    z = lerp(z_sem[k], z_sem[k + 1], a)
    x = slerp(x_T[k], x_T[k + 1], a)
    m = None if morph is None else lerp(morph[k], morph[k + 1], a)
    return GapCodes(z, x, ks, alphas, idx, m)



def assemble(acquired: torch.Tensor, new: torch.Tensor, codes: GapCodes, factor: int) -> torch.Tensor:
    """Dense stack (X, Y, Z') from acquired slices (X, Y, Z) and new slices (N, 1, X, Y)."""
    X, Y, Z = acquired.shape
    slices = [None] * ((Z - 1) * factor + 1)
    for k in range(Z):
        slices[k * factor] = acquired[:, :, k]
    for n, i in enumerate(codes.out_index):
        slices[int(i)] = new[n, 0]
    return torch.stack(slices, dim=-1)


def diffae_codes(model: DiffAE, stack: np.ndarray, factor: int, invert_steps: int,
                 progress: bool = False, depth: float = 1.0) -> tuple[torch.Tensor, GapCodes]:
    """Encode the acquired slices of one frame (X, Y, Z) and interpolate the gap codes (with a
    DMCVR model, also the morphology features)."""
    x0 = torch.from_numpy(np.ascontiguousarray(np.moveaxis(stack, 2, 0)))[:, None].float()
    x0 = x0.to(next(model.parameters()).device)  # tensors follow the model (cardiorecon.device)
    morph = model.morphology(x0) if hasattr(model, "morphology") else None
    z, x_T = encode(model, x0, invert_steps, progress=progress, depth=depth, morph=morph)
    return x0, interpolate_codes(z, x_T, factor, morph)


def reconstruct_diffae(model: DiffAE, stack: np.ndarray, factor: int, invert_steps: int = 20, decode_steps: int = 20,
                       progress: bool = False, depth: float = 1.0) -> tuple[np.ndarray, GapCodes]:
    """(X, Y, Z) in [-1, 1] -> (X, Y, (Z-1)f+1): acquired slices kept, new ones decoded.

    depth: how far DDIM inversion goes (1 = to pure noise, as the DiffAE paper; see ReconConfig)."""
    _, codes = diffae_codes(model, stack, factor, invert_steps, progress, depth)
    new = decode(model, codes.z_sem, codes.x_T, decode_steps, progress=progress, depth=depth, morph=codes.morph)
    dense = assemble(torch.from_numpy(stack).float().to(new.device), new, codes, factor)
    return dense.cpu().numpy(), codes


def centre_window(shape_xy: tuple[int, int], size: int | None) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) of the size x size window at the centre of an (X, Y) slice; None when `size` is
    None or the window would hold the whole slice."""
    X, Y = shape_xy
    if size is None or (size >= X and size >= Y):
        return None
    h, w = min(size, X), min(size, Y)
    r0, c0 = (X - h) // 2, (Y - w) // 2
    return r0, r0 + h, c0, c0 + w


def dense_codes(model: DiffAE, dense: np.ndarray, factor: int, invert_steps: int, depth: float = 1.0,
                window: int | None = None) -> GapCodes:
    """Codes of the new slices of a dense stack (X, Y, (Z-1)f+1) made by another method (`lag --init
    register|fusion`): each new slice encoded itself (z_sem by the encoder, x_T by DDIM inversion),
    so decoding the codes gives back (close to) that volume instead of the latent interpolants.
    `window` (pixels): only the central window x window of each new slice is encoded (the heart region
    at the centre of the working grid; `GapCodes.window`), the whole slice stays in `base`."""
    num_acquired = (dense.shape[2] - 1) // factor + 1
    ks, alphas, idx = new_slice_positions(num_acquired, factor)
    x0 = torch.from_numpy(np.ascontiguousarray(np.moveaxis(dense[:, :, idx], 2, 0)))[:, None].float()
    x0 = x0.to(next(model.parameters()).device)  # tensors follow the model (cardiorecon.device)
    box = centre_window(dense.shape[:2], window)
    crop = x0 if box is None else x0[..., box[0]:box[1], box[2]:box[3]].contiguous()
    morph = model.morphology(crop) if hasattr(model, "morphology") else None
    z, x_T = encode(model, crop, invert_steps, depth=depth, morph=morph)
    return GapCodes(z, x_T, ks, alphas, idx, morph, base=x0, window=box)


@dataclass(frozen=True)
class LatentOptions:
    """DDIM steps of the encoding (inversion) and decoding, and the inversion depth (fraction of T)."""

    invert_steps: int = 8
    decode_steps: int = 8
    depth: float = 0.4


@register_method
class DiffAEInterpolation(ReconMethod):
    """Latent interpolation through the diffusion autoencoder (z_sem lerp, x_T slerp, DDIM decode)."""

    name = "diffae"
    summary = "diffusion-autoencoder codes of the acquired slices interpolated (lerp z_sem, slerp x_T), decoded"
    weights = "diffae"
    adaptable = True
    seconds_per_frame = "5-70 s (70 s on a UK Biobank-sized phantom)"
    Options = LatentOptions

    @classmethod
    def options_from(cls, config) -> LatentOptions:
        return LatentOptions(config.invert_steps, config.decode_steps, config.depth)

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        o = self.options
        return reconstruct_diffae(self.model, work.stack(frame), work.factor, o.invert_steps, o.decode_steps,
                                  depth=o.depth)[0]
