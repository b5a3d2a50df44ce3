"""Patient adaptation: fine-tune a copy of the diffusion prior on one study's own images.

A study holds hundreds of real slices of its own heart (every acquired SAX slice in every frame).
Before `diffae`, `lag` or `dmcvr` reconstruct it, `adapt` trains a deep copy of the model on those
slices with the usual diffusion loss (epsilon MSE), for a fixed number of steps:
- only a few layers change (`AdaptConfig.layers`): by default the decoder's finest up level and its
  output head, plus the semantic encoder's head; everything else stays frozen;
- timesteps are drawn from [0, depth T), the part of the chain that reconstruction uses (codes are
  inverted to depth T and decoded from there);
- batches are random crops of the working grid at the model's own size (the networks are
  convolutional and the grid may be larger than the model's 64 px), with small rotations and shifts
  (never a flip), the same transforms as training;
- the shipped model (the argument) is never modified: the copy is returned.

The data are the study's acquired SAX slices of every frame (`study_slices`) and its LAX images of
every frame as 2D images on the model grid (`lax_slices`: resampled to the grid's pixel spacing, a
square of the grid's size centred where the grid centre projects onto the view's plane).

Only the images the method is given are used: in the slice-drop protocol the dropped slices are
not in the study that reaches here; in the LAX hold-out only the guiding views (the pipeline's
`lax_views`) are adapted on, never the held-out one; reference labels are never read.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cardiorecon.diffusion import NoiseSchedule

#: which weights adaptation trains (all others frozen)
LAYER_SETS = ("tail", "tail+encoder", "decoder", "all")


@dataclass(frozen=True)
class AdaptConfig:
    """How to adapt (the number of steps is given to `adapt` / `ReconConfig.adapt`)."""

    batch_size: int = 8
    lr: float = 2e-4
    layers: str = "tail+encoder"  # one of LAYER_SETS
    max_rotation_deg: float = 5.0
    max_shift_px: float = 3.0
    grad_clip: float = 1.0
    seed: int = 0
    crop: int | None = None  # crop size in pixels; None: the model's image_size
    # torch threads while adapting on a CPU (at most the current setting). Measured on the shared
    # 2-core machine under load: a micro model's step took 0.85 s at 1 thread, 6.7 s at 2 threads.
    num_threads: int = 1


@dataclass
class AdaptResult:
    model: nn.Module  # the adapted copy (eval mode, frozen)
    steps: int
    seconds: float
    trainable: int  # number of parameters that changed
    num_slices: int
    losses: list[float] = field(default_factory=list)
    num_lax: int = 0  # of num_slices, LAX images on the model grid

    @property
    def note(self) -> str:
        images = f"{self.num_slices - self.num_lax} acquired SAX slices" + \
            (f" and {self.num_lax} LAX images" if self.num_lax else "")
        return (f"adapted a copy of the model to this study: {self.steps} steps on its {images} "
                f"({self.trainable / 1e6:.2f} M parameters trained), {self.seconds:.0f} s")


def _core(model: nn.Module) -> nn.Module:
    """The DiffAE inside (a DMCVR wraps one beside its frozen segmentation network)."""
    return model.diffae if hasattr(model, "morphology") else model


def trainable_parameters(model: nn.Module, layers: str) -> list[nn.Parameter]:
    """The parameters of `model` (DiffAE or DMCVR) that adaptation trains under `layers`."""
    if layers not in LAYER_SETS:
        raise ValueError(f"adapt layers must be one of {LAYER_SETS}, not {layers!r}")
    core = _core(model)
    dec = core.decoder
    if layers == "all":
        return [p for p in core.parameters()]
    if layers == "decoder":
        return list(dec.parameters())
    n_last = core.config.num_res_blocks + 1  # up blocks of the finest level
    mods = list(dec.up[-n_last:]) + [dec.out]
    if layers == "tail+encoder":
        mods.append(core.encoder.head)
    return [p for m in mods for p in m.parameters()]


def study_slices(image: np.ndarray) -> torch.Tensor:
    """(X, Y, Z[, T]) in [-1, 1] -> every slice of every frame (Z T, 1, X, Y)."""
    d = image if image.ndim == 4 else image[..., None]
    X, Y, Z, T = d.shape
    return torch.from_numpy(np.ascontiguousarray(np.transpose(d, (3, 2, 0, 1)).reshape(Z * T, 1, X, Y))).float()


#: a LAX frame is adapted on only if at least this share of its square on the model grid lies inside the image
MIN_LAX_COVERAGE = 0.5


def lax_slices(views: dict, spacing_mm: float, size: int, centre: np.ndarray) -> torch.Tensor:
    """Every frame of every LAX view in `views` ({name: Volume (X, Y, 1[, T])}) as a 2D image on the
    model grid: (N, 1, size, size) in [-1, 1]. Each view is resampled in its own plane to square pixels
    of `spacing_mm`, size x size around `centre` (world, the working grid's centre) projected onto the
    plane, and mapped to [-1, 1] by the percentiles of its pixels inside the image over all its frames
    (as the SAX grid is). Frames whose square lies less than MIN_LAX_COVERAGE inside the image are left
    out (a view that misses the heart region adds nothing)."""
    from cardiorecon.geometry import resample_inplane
    from cardiorecon.preprocess import intensity_map

    out = []
    for view in views.values():
        sampled = resample_inplane(view, spacing_mm, size, centre)
        inside = resample_inplane(view.with_data(np.ones(view.spatial_shape, np.float32)), spacing_mm, size,
                                  centre).data[:, :, 0] > 0.5
        if inside.mean() < MIN_LAX_COVERAGE:
            continue
        d = sampled.data if sampled.data.ndim == 4 else sampled.data[..., None]  # (S, S, 1, T)
        imap = intensity_map(d[inside])
        frames = imap.forward(np.where(inside[:, :, None, None], d, imap.offset - imap.scale))[:, :, 0]
        out.append(np.transpose(frames, (2, 0, 1)))  # (T, S, S)
    if not out:
        return torch.zeros(0, 1, size, size)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(out)[:, None])).float()


def _batch(slices: torch.Tensor, config: AdaptConfig, crop: int, g: torch.Generator) -> torch.Tensor:
    """Random slices, each randomly cropped to `crop` and rotated / shifted slightly (no flip)."""
    from cardiorecon.training.data import training_theta

    idx = torch.randint(len(slices), (config.batch_size,), generator=g)
    x = slices[idx]
    H, W = x.shape[-2:]
    if H > crop or W > crop:
        i = torch.randint(H - crop + 1, (len(x),), generator=g) if H > crop else torch.zeros(len(x), dtype=torch.long)
        j = torch.randint(W - crop + 1, (len(x),), generator=g) if W > crop else torch.zeros(len(x), dtype=torch.long)
        x = torch.stack([x[b, :, i[b]:i[b] + min(crop, H), j[b]:j[b] + min(crop, W)] for b in range(len(x))])
    theta = training_theta(len(x), g, config.max_rotation_deg, config.max_shift_px, x.shape[-1])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _eps_loss(model: nn.Module, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              schedule: NoiseSchedule) -> torch.Tensor:
    x_t = schedule.add_noise(x0, eps, t)
    if hasattr(model, "morphology"):
        with torch.no_grad():
            morph = model.morphology(x0)
        pred = model.diffae(x_t, t, x0, morph)
    else:
        pred = model(x_t, t, x0)
    return F.mse_loss(pred.float(), eps)


def denoising_loss(model: nn.Module, slices: torch.Tensor, depth: float = 0.4, n: int = 64, seed: int = 1234,
                   batch_size: int = 16) -> float:
    """The diffusion loss of `model` on `slices` (N, 1, H, W) with fixed draws of slices, t in
    [0, depth T) and noise: comparable across models (used to check and report adaptation)."""
    core = _core(model)
    schedule = NoiseSchedule.linear(core.config.num_timesteps)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(slices), (n,), generator=g)
    t_max = max(1, int(round(depth * schedule.num_timesteps)))
    t = torch.randint(0, t_max, (n,), generator=g)
    eps = torch.randn((n, *slices.shape[1:]), generator=g)
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, batch_size):
            sl = slice(s, min(s + batch_size, n))
            total += _eps_loss(model, slices[idx[sl]].to(device), t[sl].to(device), eps[sl].to(device),
                               schedule).item() * (sl.stop - sl.start)
    return total / n


def adapt(model: nn.Module, slices: torch.Tensor, steps: int, config: AdaptConfig = AdaptConfig(),
          depth: float = 0.4, progress: bool = False, lax: torch.Tensor | None = None) -> AdaptResult:
    """Fine-tune a deep copy of `model` (DiffAE or DMCVR) on `slices` (N, 1, H, W) in [-1, 1], and the
    LAX images `lax` (M, 1, H, W) on the same grid if given (`lax_slices`), for `steps` Adam steps of
    the diffusion loss, t in [0, depth T). `model` itself is left untouched."""
    if slices.ndim != 4 or len(slices) == 0:
        raise ValueError(f"adaptation needs slices (N, 1, H, W), got {tuple(slices.shape)}")
    num_lax = 0 if lax is None else len(lax)
    if num_lax:
        if lax.shape[1:] != slices.shape[1:]:
            raise ValueError(f"LAX images {tuple(lax.shape[1:])} are not on the SAX grid {tuple(slices.shape[1:])}")
        slices = torch.cat([slices, lax.to(slices.dtype)])
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(config.num_threads, threads)))
    try:
        res = _adapt(model, slices, steps, config, depth, progress)
    finally:
        torch.set_num_threads(threads)
    res.num_lax = num_lax
    return res


def _adapt(model: nn.Module, slices: torch.Tensor, steps: int, config: AdaptConfig, depth: float,
           progress: bool) -> AdaptResult:
    t0 = time.perf_counter()
    tuned = copy.deepcopy(model)
    tuned.requires_grad_(False)
    params = trainable_parameters(tuned, config.layers)
    for p in params:
        p.requires_grad_(True)
    core = _core(tuned)
    schedule = NoiseSchedule.linear(core.config.num_timesteps)
    t_max = max(1, int(round(depth * schedule.num_timesteps)))
    crop = config.crop or core.config.image_size
    device = next(tuned.parameters()).device
    opt = torch.optim.Adam(params, lr=config.lr)
    losses: list[float] = []
    core.train()
    bar = tqdm(range(steps), desc="adapt to the study", unit="step", disable=not progress, leave=False)
    for step in bar:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0]))
        x0 = _batch(slices, config, crop, g)
        t = torch.randint(0, t_max, (len(x0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = _eps_loss(tuned, x0.to(device), t.to(device), eps.to(device), schedule)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        losses.append(float(loss.item()))
        if progress and step % 5 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    tuned.eval().requires_grad_(False)
    return AdaptResult(tuned, steps, time.perf_counter() - t0, sum(p.numel() for p in params), len(slices), losses)


__all__ = ["AdaptConfig", "AdaptResult", "LAYER_SETS", "adapt", "denoising_loss", "lax_slices", "study_slices",
           "trainable_parameters"]
