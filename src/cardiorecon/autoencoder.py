"""Studies to and from DiffAE codes: the model grid, batched encoding (z_sem by the encoder,
x_T by DDIM inversion) and decoding, with progress for long work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cardiorecon.diffusion import NoiseSchedule, ddim_invert, ddim_sample
from cardiorecon.models.diffae import DiffAE
from cardiorecon.preprocess import HeartRegion, IntensityMap, grid_size_for, heart_region, intensity_map, to_model_grid
from cardiorecon.volume import Study, Volume


@dataclass
class ModelGrid:
    """A study's SAX on the model grid: `image` in [-1, 1] (X, Y, Z, T) with its affine, the
    intensity map back to scanner units, and where the crop centre came from."""

    image: Volume
    intensity: IntensityMap
    centre: np.ndarray
    centre_source: str
    labels: Volume | None = None
    region: HeartRegion | None = None


def prepare_study(study: Study, spacing_mm: float, size: int, region: HeartRegion | None = None,
                  sax_shifts_mm: np.ndarray | None = None) -> ModelGrid:
    """The study's SAX on a square working grid of `spacing_mm` pixels around the heart region
    (found from the images when not given). The grid has at least `size` pixels and grows (in steps
    of 16) until it holds the whole region, so both ventricles are inside at the model's spacing.
    `sax_shifts_mm` (Z, 2): breath-hold shifts (`cardiorecon.align`), applied in the same resampling."""
    region = region if region is not None else heart_region(study)
    size = grid_size_for(region, spacing_mm, size)
    grid = to_model_grid(study.sax, spacing_mm, size, region.centre, sax_shifts_mm=sax_shifts_mm)
    imap = intensity_map(grid.data)
    labels = None if study.sax_labels is None else to_model_grid(study.sax_labels, spacing_mm, size, region.centre,
                                                                 labels=True, sax_shifts_mm=sax_shifts_mm)
    return ModelGrid(grid.with_data(imap.forward(grid.data)), imap, region.centre, region.source, labels, region)


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def _cond(z: torch.Tensor, morph: torch.Tensor | None, sl: slice):
    return z if morph is None else (z, morph[sl])


def encode(model: DiffAE, x0: torch.Tensor, invert_steps: int, batch_size: int = 64,
           progress: bool = False, depth: float = 1.0, morph: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """z_sem (N, z_dim) and x_T (N, 1, H, W) of clean slices x0 (N, 1, H, W) in [-1, 1].

    `morph`: the slices' morphology features, for a DMCVR decoder (inversion under that condition)."""
    schedule = NoiseSchedule.linear(model.config.num_timesteps)
    zs, xs = [], []
    with torch.no_grad():
        bar = tqdm(total=len(x0) * invert_steps, desc="encode (DDIM inversion)", unit="slice-step", disable=not progress)
        device = next(model.parameters()).device  # tensors follow the model (cardiorecon.device)
        x0 = x0.to(device)
        morph = None if morph is None else morph.to(device)
        for sl in _batches(len(x0), batch_size):
            z = model.encode(x0[sl])
            xs.append(ddim_invert(model.eps, x0[sl], schedule, invert_steps, cond=_cond(z, morph, sl), depth=depth,
                                  callback=lambda i, _x, n=sl.stop - sl.start: bar.update(n)))
            zs.append(z)
        bar.close()
    return torch.cat(zs), torch.cat(xs)


def decode(model: DiffAE, z_sem: torch.Tensor, x_T: torch.Tensor, decode_steps: int, batch_size: int = 64,
           progress: bool = False, depth: float = 1.0, morph: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic DDIM decoding of codes (N, z_dim), (N, 1, H, W) [, morphology] -> x0 (N, 1, H, W)."""
    schedule = NoiseSchedule.linear(model.config.num_timesteps)
    out = []
    with torch.no_grad():
        bar = tqdm(total=len(x_T) * decode_steps, desc="decode (DDIM)", unit="slice-step", disable=not progress)
        device = next(model.parameters()).device  # tensors follow the model (cardiorecon.device)
        z_sem, x_T = z_sem.to(device), x_T.to(device)
        morph = None if morph is None else morph.to(device)
        for sl in _batches(len(x_T), batch_size):
            out.append(ddim_sample(model.eps, x_T[sl], schedule, decode_steps, cond=_cond(z_sem[sl], morph, sl),
                                   depth=depth,
                                   callback=lambda i, _x, n=sl.stop - sl.start: bar.update(n)))
        bar.close()
    return torch.cat(out)


def volume_to_slices(data: np.ndarray) -> torch.Tensor:
    """(X, Y, Z) or (X, Y, Z, T) -> slices (Z*T, 1, X, Y), frame-major."""
    d = data if data.ndim == 4 else data[..., None]
    X, Y, Z, T = d.shape
    return torch.from_numpy(np.ascontiguousarray(np.transpose(d, (3, 2, 0, 1)).reshape(T * Z, 1, X, Y))).float()


def slices_to_volume(x: torch.Tensor, num_slices: int) -> np.ndarray:
    """Inverse of volume_to_slices: (Z*T, 1, X, Y) -> (X, Y, Z, T)."""
    n, _, X, Y = x.shape
    T = n // num_slices
    return np.transpose(x.reshape(T, num_slices, X, Y).cpu().numpy(), (2, 3, 1, 0))


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR (dB) per image of (N, 1, H, W) tensors in [-1, 1]."""
    mse = (x - y).float().square().flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)
