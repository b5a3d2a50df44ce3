"""Multi-view fusion (the `fusion` method): one dense volume fitted to every acquired SAX slice and
every guiding LAX view through their acquisition (slice-to-volume reconstruction, as NeSVoR / NISF
do per subject, here on an explicit grid).

Unknown: the dense SAX volume V (X, Y, Z') on the working grid at the output slice step (an explicit
grid: no network to fit, so a frame is a few seconds of Adam; the implicit-network alternative was
not built). Forward models:
- SAX: acquired slice k is the average of V across its slice thickness (`SliceProfile`: a Gaussian
  of FWHM = the slice thickness by default, or a box of that width, integrated against V's linear
  interpolation between dense slices). In-plane the acquired slices already live on V's grid
  (the model grid is their resample), so a grid pixel is its own footprint.
- LAX: `LaxOperator` (trilinear on the plane, averaged across the LAX thickness), then a per-view
  gain and offset (learned, started from least squares) so that no intensity match is assumed.
Objective, minimised with Adam on V and the LAX gains/offsets:

    rho(P V - S) + lambda_lax * sum_v rho(g_v A_v V + b_v - L_v) + lambda_tv * TV(V)
      + lambda_prior * rho(V - V0) + lambda_time * rho(V - V_prev)

rho = Charbonnier, sqrt(r^2 + eps^2) - eps (robust to misregistered pixels), averaged over valid
pixels; TV is isotropic with the through-plane difference scaled to in-plane pixels (edge-
preserving); V0 is the start (the `register` volume), which holds the slices no view constrains
where the neighbours already tell most; V_prev is the previous frame's result when the previous
frame in the list is the adjacent cardiac phase, else the term is off. 4D warm start: frames in
order, each starting from the previous frame's LAX gains and offsets and pulled toward its volume by
the temporal term; the volume itself starts from this frame's `register` result, which already
follows the motion (the last frame's volume would not).

The acquired slices do not come out exactly as acquired: an acquired pixel is the thickness-average
of V, not V at the slice centre, so V at the centre plane differs from the acquired image by the
de-blurring across the slab plus whatever the robust term and TV remove. Measured (slice-drop,
intensities in [-1, 1]; `FusionResult.sax_residual_rms`): through the profile the fit reproduces
the acquired slices to RMS 0.005 (ep_preclinical frame 0) and 0.002 (Sunnybrook SC-HF-I-1 frame
18), well inside their noise; the centre plane itself differs from the acquired image by RMS 0.039
and 0.085 (the slab's de-blurring; 5 mm slices on a 5 mm step, 8 mm on 10 mm).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from cardiorecon.lax_operator import LaxOperator
from cardiorecon.recon.guidance import guiding_views, lax_images
from cardiorecon.recon.register import RegisterConfig, register_stack
from cardiorecon.recon.registry import ReconMethod, Work, register_method
from cardiorecon.volume import Volume


@dataclass(frozen=True)
class FusionConfig:
    iterations: int = 60
    # L-BFGS (strong Wolfe line search) over Adam, measured on ep_preclinical frame 0 with lambda_lax
    # 1 (SSIM / PSNR of the dropped slices): Adam lr 1e-2, 120 it 0.696 / 22.33, lr 2e-3 0.727 / 23.85
    # (Adam's per-voxel step sizes roughen the volume: TV rises); L-BFGS 60 evaluations 0.756 / 24.68.
    optimiser: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 0.01  # Adam only
    # LAX weight, measured on ep_preclinical slice-drop frames 0 / 10 (box profile, eps 0.02; SSIM /
    # PSNR of the dropped slices; register 0.776 / 24.82 and 0.774 / 24.85): 0 (SAX only) 0.780 / 24.87 (frame 0);
    # 0.1: 0.785 / 25.03 and 0.784 / 25.03; 0.3: 0.782 / 25.07 and 0.778 / 24.95; 1.0: 0.756 / 24.68.
    # Fitting the real LAX harder pulls the dropped slices away: the views agree with the SAX stack
    # only to NCC 0.82-0.95 (full stack sampled on each view), so the LAX can only nudge.
    lambda_lax: float = 0.1
    lambda_tv: float = 0.02
    lambda_prior: float = 0.2
    lambda_time: float = 0.1
    # Profile and robustness, measured (SSIM / PSNR of the dropped slices, slice-drop): box, eps 0.02:
    # ep_preclinical frame 0 0.785 / 25.03, frame 10 0.784 / 25.03, SC-HF-I-1 frame 18 0.515 / 17.89;
    # Gaussian (FWHM = thickness), eps 0.05: 0.791 / 25.16, 0.789 / 25.13, 0.516 / 17.91 (Gaussian
    # alone 0.789 / 25.10 and eps 0.05 alone 0.787 / 25.09 on frame 0). A real slice profile has soft
    # edges; a larger eps is closer to least squares for the small residuals.
    charbonnier_eps: float = 0.05
    profile: Literal["box", "gaussian"] = "gaussian"
    register: RegisterConfig = RegisterConfig()
    # torch threads during the fit. Measured on these 2 shared cores (load ~6): TV forward+backward
    # of a 64 x 64 x 19 volume 5 ms at 1 thread, 1.07 s at 2 (OpenMP waits on busy cores); a whole
    # ep_preclinical fit iteration 0.1 s vs 1.1 s. The tensors are too small to gain from threads.
    num_threads: int = 1


@dataclass
class SliceProfile:
    """Acquired slices as thickness averages of a dense stack: weights (Z, Z'), rows sum to 1."""

    weights: torch.Tensor

    @classmethod
    def build(cls, num_acquired: int, factor: int, thickness: float, profile: Literal["box", "gaussian"] = "box",
              samples: int = 4001) -> "SliceProfile":
        """thickness: the slice thickness in dense slice steps (thickness_mm / dense_step_mm); acquired
        slice k is centred on dense slice k * factor.

        V between dense slices is linear (as every sampler here: V(z) = sum_i V_i hat(z - i)), so an
        acquired pixel is integral profile(z - c) V(z) dz, i.e. weight_i = integral profile(z - c)
        hat(z - i) dz: exact for the box (the hat's primitive), by the midpoint rule on `samples`
        points for the Gaussian (FWHM = thickness, cut at 4 sigma). The part of the profile outside
        the stack is dropped and the weights renormalised to sum to 1."""
        num_dense = (num_acquired - 1) * factor + 1
        W = np.zeros((num_acquired, num_dense))
        i = np.arange(num_dense)
        for k in range(num_acquired):
            c = k * factor
            if thickness <= 0:
                W[k, c] = 1.0
                continue
            if profile == "box":
                lo, hi = max(c - thickness / 2, 0.0), min(c + thickness / 2, num_dense - 1.0)
                W[k] = _hat_primitive(hi - i) - _hat_primitive(lo - i)
            elif profile == "gaussian":
                sigma = thickness / (2 * np.sqrt(2 * np.log(2)))  # FWHM = thickness
                lo, hi = max(c - 4 * sigma, 0.0), min(c + 4 * sigma, num_dense - 1.0)
                edges = np.linspace(lo, hi, samples + 1)
                z = (edges[:-1] + edges[1:]) / 2
                p = np.exp(-0.5 * ((z - c) / sigma) ** 2)
                left = np.clip(np.floor(z).astype(int), 0, num_dense - 1)
                right = np.clip(left + 1, 0, num_dense - 1)
                np.add.at(W[k], left, p * (1 - (z - left)))
                np.add.at(W[k], right, p * (z - left))
            else:
                raise ValueError(f"unknown slice profile {profile!r}")
            W[k] /= W[k].sum()
        return cls(torch.from_numpy(W).float())

    def apply(self, volume: torch.Tensor) -> torch.Tensor:
        """(X, Y, Z') -> (X, Y, Z)."""
        return torch.einsum("xyz,kz->xyk", volume, self.weights.to(volume.dtype))


def coarsen_view(view: Volume, spacing_mm: float) -> Volume:
    """A LAX view block-averaged in-plane to about `spacing_mm` pixels (the grid's): each coarse pixel
    is the mean of k x k acquired pixels (a box footprint), its centre at their mean, so the LAX
    data term compares like with like and costs (k x k) times less. k = floor(spacing / pixel)."""
    sx, sy = (float(v) for v in view.spacing[:2])
    kx, ky = max(1, int(spacing_mm // sx)), max(1, int(spacing_mm // sy))
    if kx == 1 and ky == 1:
        return view
    X, Y = view.data.shape[:2]
    Xc, Yc = X // kx, Y // ky
    d = np.asarray(view.data[:Xc * kx, :Yc * ky], np.float32)
    d = d.reshape(Xc, kx, Yc, ky, *d.shape[2:]).mean(axis=(1, 3))
    affine = view.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([(kx - 1) / 2, (ky - 1) / 2, 0.0]) + affine[:3, 3]
    affine[:3, 0] *= kx
    affine[:3, 1] *= ky
    return Volume(d, affine, dict(view.meta))


@dataclass
class ValidSampler:
    """A LaxOperator restricted to its valid pixels: grid (1, S, 1, N, 3), mask (H, W)."""

    grid: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def of(cls, op: LaxOperator) -> "ValidSampler":
        g = op.grid[0][:, op.valid]  # (S, N, 3)
        return cls(g[:, None][None].contiguous(), op.valid)

    def sample(self, volume: torch.Tensor) -> torch.Tensor:
        """(X, Y, Z') -> (N,) thickness-averaged trilinear samples at the valid pixels."""
        out = torch.nn.functional.grid_sample(volume[None, None], self.grid, mode="bilinear", padding_mode="border",
                                              align_corners=True)
        return out[0, 0, :, 0].mean(0)


def _hat_primitive(x: np.ndarray) -> np.ndarray:
    """integral from -inf to x of the linear-interpolation hat max(0, 1 - |z|)."""
    x = np.clip(np.asarray(x, dtype=float), -1, 1)
    return np.where(x < 0, (x + 1) ** 2 / 2, 1 - (1 - x) ** 2 / 2)


def charbonnier(r: torch.Tensor, eps: float) -> torch.Tensor:
    return (torch.sqrt(r * r + eps * eps) - eps).mean()


def total_variation(volume: torch.Tensor, z_scale: float, eps: float = 1e-3) -> torch.Tensor:
    """Isotropic TV of (X, Y, Z') with through-plane differences multiplied by z_scale (in-plane
    pixel / dense slice step), so gradients are per in-plane pixel."""
    dx = volume[1:, :-1, :-1] - volume[:-1, :-1, :-1]
    dy = volume[:-1, 1:, :-1] - volume[:-1, :-1, :-1]
    dz = (volume[:-1, :-1, 1:] - volume[:-1, :-1, :-1]) * z_scale
    return torch.sqrt(dx * dx + dy * dy + dz * dz + eps * eps).mean()


@dataclass
class FusionResult:
    dense: np.ndarray  # (X, Y, Z')
    history: list[dict] = field(default_factory=list)
    sax_residual_rms: float = float("nan")  # on the acquired slices, P V - S, intensities in [-1, 1]
    gains: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _least_squares_gain(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Gain and offset of y ~ g x + b."""
    if x.numel() < 2:
        return 1.0, 0.0
    xc = x - x.mean()
    g = float((xc * (y - y.mean())).sum() / xc.square().sum().clamp_min(1e-8))
    return g, float(y.mean() - g * x.mean())


def fuse(acquired: np.ndarray, start: np.ndarray, profile: SliceProfile, operators: dict[str, LaxOperator],
         images: dict[str, torch.Tensor], config: FusionConfig = FusionConfig(), z_scale: float = 1.0,
         previous: np.ndarray | None = None, progress=None,
         gains: dict[str, tuple[float, float]] | None = None) -> FusionResult:
    """Fit V (X, Y, Z') to the acquired SAX slices (X, Y, Z) and the LAX images of `operators`.

    start: the initial volume V0 (e.g. `register`); images: LAX frames (H, W) matched to each
    operator; z_scale: in-plane pixel size / dense slice step (for TV); previous: the fitted volume of
    the adjacent cardiac phase (temporal term), or None; gains: that frame's fitted LAX gain and offset
    per view (the warm start; else least squares on the start). `progress(i, total, loss)` per evaluation of the
    objective (i counts evaluations, total their bound: L-BFGS makes up to 1.25 per iteration)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(config.num_threads, threads)))
    try:
        return _fit(acquired, start, profile, operators, images, config, z_scale, previous, progress, gains or {})
    finally:
        torch.set_num_threads(threads)


def _fit(acquired, start, profile, operators, images, config, z_scale, previous, progress, warm) -> FusionResult:
    t0 = time.perf_counter()
    S = torch.from_numpy(np.ascontiguousarray(acquired, np.float32))
    V0 = torch.from_numpy(np.ascontiguousarray(start, np.float32))
    prev = None if previous is None else torch.from_numpy(np.ascontiguousarray(previous, np.float32))
    V = V0.clone().requires_grad_(True)
    views = {n: ValidSampler.of(op) for n, op in operators.items() if op.num_valid > 0}
    targets = {n: images[n].float()[views[n].mask] for n in views}
    gain, offset = {}, {}
    with torch.no_grad():
        for n, sampler in views.items():
            g, b = warm[n] if n in warm else _least_squares_gain(sampler.sample(V0), targets[n])
            gain[n] = torch.tensor(g, requires_grad=True)
            offset[n] = torch.tensor(b, requires_grad=True)
    params = [V, *gain.values(), *offset.values()]
    lbfgs = config.optimiser == "lbfgs"
    # L-BFGS evaluates the objective more often than it iterates (line search): progress counts
    # evaluations against their bound, so a bar never runs past its end ("62it of 60")
    max_evaluations = config.iterations * 5 // 4 if lbfgs else config.iterations
    if lbfgs:  # one call runs all iterations (repeated max_iter=1 calls restart its step-size logic)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=config.iterations, max_eval=max_evaluations,
                                history_size=20, line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                tolerance_change=1e-10)
    else:
        opt = torch.optim.Adam(params, lr=config.lr)
    eps = config.charbonnier_eps
    history = []

    def losses():
        d_sax = charbonnier(profile.apply(V) - S, eps)
        d_lax = V.sum() * 0.0
        for n, sampler in views.items():
            d_lax = d_lax + charbonnier(gain[n] * sampler.sample(V) + offset[n] - targets[n], eps)
        if views:
            d_lax = d_lax / len(views)
        tv = total_variation(V, z_scale)
        prior = charbonnier(V - V0, eps)
        temporal = charbonnier(V - prev, eps) if prev is not None else V.sum() * 0.0
        total = (d_sax + config.lambda_lax * d_lax + config.lambda_tv * tv + config.lambda_prior * prior
                 + config.lambda_time * temporal)
        parts = {"sax": d_sax, "lax": d_lax, "tv": tv, "prior": prior, "temporal": temporal}
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def closure():
        # One evaluation of the objective and its gradient, recorded (L-BFGS: several per iteration).
        opt.zero_grad()
        total, parts = losses()
        history.append({"iteration": len(history), "loss": float(total.detach()),
                        "data": parts["sax"] + config.lambda_lax * parts["lax"], **parts,
                        "seconds": time.perf_counter() - t0})
        if progress is not None:
            progress(len(history), max_evaluations, float(total.detach()))
        total.backward()
        return total

    if lbfgs:
        opt.step(closure)
    else:
        for _ in range(config.iterations):
            opt.step(closure)
    with torch.no_grad():  # the final state
        total, parts = losses()
    history.append({"iteration": len(history), "loss": float(total),
                    "data": parts["sax"] + config.lambda_lax * parts["lax"],
                    **parts, "seconds": time.perf_counter() - t0})
    dense = V.detach()
    with torch.no_grad():
        rms = float((profile.apply(dense) - S).square().mean().sqrt())
    gains = {n: (float(gain[n].detach()), float(offset[n].detach())) for n in views}  # detached: no torch warning
    return FusionResult(dense.numpy(), history, rms, gains,
                        time.perf_counter() - t0)




@dataclass
class FusionSetup:
    """What a fusion fit needs of a study once: the SAX slice profile (thickness in dense slice steps),
    TV's through-plane scale, the LAX views block-averaged to the grid's pixel size (their footprint)
    and their operators on the dense grid."""

    profile: SliceProfile
    z_scale: float
    study: object  # the Study with the coarsened LAX views
    operators: dict[str, LaxOperator]

    @classmethod
    def build(cls, work: Work, config: FusionConfig, lax_samples: int, notes: list[str]) -> "FusionSetup":
        grid, f = work.grid, work.factor
        Z = grid.image.spatial_shape[2]
        dense_step = float(grid.image.spacing[2]) / f
        profile = SliceProfile.build(Z, f, work.study.sax.slice_thickness / dense_step, config.profile)
        z_scale = float(grid.image.spacing[0]) / dense_step
        study = dataclasses.replace(work.study, lax={n: coarsen_view(v, float(grid.image.spacing[0]))
                                                     for n, v in work.study.lax.items()})
        return cls(profile, z_scale, study, guiding_views(study, grid, f, work.lax_views, lax_samples, notes))

    def images(self, frame: int) -> dict[str, torch.Tensor]:
        return lax_images(self.study, self.operators, frame)


@dataclass(frozen=True)
class FusionOptions:
    register: RegisterConfig = RegisterConfig()
    fusion: FusionConfig = FusionConfig()
    lax_samples: int = 3


@register_method
class Fusion(ReconMethod):
    """`register`'s volume fitted to the acquired SAX slices through their profile and to the LAX views."""

    name = "fusion"
    summary = "register's volume fitted to the SAX slice profile and the guiding LAX views (TV, time term)"
    guided_by_lax = True
    seconds_per_frame = "3-16 s"
    Options = FusionOptions

    @classmethod
    def options_from(cls, config) -> FusionOptions:
        return FusionOptions(config.register, config.fusion, config.lax_samples)

    def prepare(self, work: Work) -> None:
        self.setup = FusionSetup.build(work, self.options.fusion, self.options.lax_samples, work.notes)
        work.operators = self.setup.operators

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        stack = work.stack(frame)
        start = register_stack(stack, work.factor, self.options.register)
        adjacent = work.follows(index)
        fit_bar = tqdm(total=self.options.fusion.iterations, desc=f"  fusion frame {frame}", unit="eval",
                       leave=False, disable=not work.progress)

        def fit_progress(it, total, loss, bar=fit_bar):
            bar.total = total  # evaluations (L-BFGS: up to 1.25 per iteration), never past the end
            bar.n = min(it, total)
            bar.refresh()

        res = fuse(stack, start, self.setup.profile, self.setup.operators, self.setup.images(frame),
                   self.options.fusion, self.setup.z_scale, previous=work.dense[..., index - 1] if adjacent else None,
                   gains=work.results[work.frames[index - 1]].gains if adjacent else None,
                   progress=fit_progress)
        fit_bar.close()
        work.results[frame] = res
        return res.dense


__all__ = ["Fusion", "FusionConfig", "FusionOptions", "FusionResult", "FusionSetup", "SliceProfile", "ValidSampler", "charbonnier", "coarsen_view", "fuse", "total_variation"]
