"""LAX-guided inverse optimisation of the new slices' DiffAE codes (LAG-DiffAE / MGDCR).

Starting from the `diffae` seeds, x_T and z_sem of all new slices are optimised jointly (one batch)
with Adam against
    lambda_lax * L_lax + lambda_cont * L_cont + lambda_seed * L_seed,
where the new slices are decoded through K differentiable DDIM steps (gradient checkpointing per
step), the acquired slices stay as acquired, L_lax sums the LAX operator's loss over the guiding
views, L_cont is the squared difference of each new slice from both neighbours, and
L_seed = MSE(x_T, seed) + MSE(z_sem, seed).

Refinement (`init` register or fusion, issue 28): the codes are those of the start volume's new
slices, and the new slices are that volume plus the change of the decoded codes from the decoded
seeds, `start + decode(codes) - decode(seeds)`: at the first iteration the volume is exactly the
start (the prior's own encode-decode error, several hundredths of SSIM on real slices, never enters),
and since the best iteration by the objective is kept, the result's objective (LAX agreement,
continuity, seed) is never worse than the start's. Without any guiding view it returns the start.

4D reuse (`init`): a frame of a cine can start from codes other than its seeds (recon/pipeline.py
passes the previous frame's optimised codes, or its seeds plus the previous frame's correction);
L_seed still anchors the codes to this frame's own seeds.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from cardiorecon.diffusion import NoiseSchedule, ddim_sample
from cardiorecon.diffusion.schedule import spaced_timesteps
from cardiorecon.errors import NumericalError
from cardiorecon.models.diffae import DiffAE
from cardiorecon.metrics.image import masked_ncc
from cardiorecon.lax_operator import LaxOperator, lax_loss, match_intensity
from cardiorecon.recon.fusion import FusionSetup, fuse
from cardiorecon.recon.guidance import guiding_views, lax_images
from cardiorecon.recon.latent_interp import GapCodes, assemble, dense_codes, diffae_codes, reconstruct_diffae
from cardiorecon.recon.register import register_stack
from cardiorecon.recon.registry import ReconMethod, Work, register_method


LAG_INITS = ("diffae", "dmcvr", "register", "fusion")  # where lag's codes start (ReconConfig.lag_init)
LAG_WARM = ("off", "previous", "delta")  # lag's warm start over a cine (ReconConfig.lag_warm)


@dataclass(frozen=True)
class LagConfig:
    """Defaults from the seed; `fast()` gives this project's CPU default."""

    lambda_lax: float = 5.0
    lambda_cont: float = 5.0
    lambda_seed: float = 0.02
    lr: float = 2e-3
    lr_halve_every: int = 50
    max_iterations: int = 200
    patience: int = 5
    # stop once the LAX term has not improved for this many iterations (None: only `patience`, on the whole loss)
    lax_patience: int | None = None
    ddim_steps: int = 30
    invert_steps: int = 30
    final_decode_steps: int | None = None  # decode the optimised codes with more steps at the end (not a refinement)
    checkpoint: bool = True
    depth: float = 1.0  # DDIM inversion depth of the codes (1: to pure noise, the seed)
    # refinement (init register / fusion) only: optimise the central window x window pixels of each new slice
    # (the heart region the working grid is centred on), the start volume kept outside it; None: the whole slice
    window: int | None = None
    max_seconds: float | None = None  # stop optimising after this long (benchmarks of slow settings)


SEED_SETTINGS = LagConfig()


@dataclass
class LagResult:
    dense: np.ndarray  # (X, Y, Z')
    history: list[dict] = field(default_factory=list)
    agreement_before: dict[str, float] = field(default_factory=dict)
    agreement_after: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    best_iteration: int = 0  # the iteration whose codes were kept (lowest loss)
    stopped: str | None = None  # why the optimisation stopped early, where not by patience or the limit
    codes: tuple[torch.Tensor, torch.Tensor] | None = None  # the kept (z_sem, x_T), on the CPU
    seeds: tuple[torch.Tensor, torch.Tensor] | None = None  # this frame's seeds (z_sem, x_T), on the CPU
    warm: str | None = None  # where the codes started when not at the seeds (set by the caller)


def continuity_loss(dense: torch.Tensor, new_index: np.ndarray) -> torch.Tensor:
    """Mean squared difference of each new slice from its two neighbours."""
    idx = torch.from_numpy(new_index)
    d_prev = (dense[:, :, idx] - dense[:, :, idx - 1]).square().mean()
    d_next = (dense[:, :, idx] - dense[:, :, idx + 1]).square().mean()
    return d_prev + d_next


def lax_agreement(dense: torch.Tensor, operators: dict[str, LaxOperator], images: dict[str, torch.Tensor]) -> dict:
    """Masked NCC of every LAX view against the volume sampled on its plane."""
    out = {}
    with torch.no_grad():
        for name, op in operators.items():
            out[name] = masked_ncc(op.sample(dense), images[name], op.valid) if op.num_valid else float("nan")
    return out


def optimise(model: DiffAE, acquired: torch.Tensor, codes: GapCodes, factor: int,
             operators: dict[str, LaxOperator], images: dict[str, torch.Tensor], config: LagConfig = LagConfig(),
             progress=None, init: tuple[torch.Tensor, torch.Tensor] | None = None) -> LagResult:
    """Optimise the gap codes so that the dense stack agrees with the LAX views.

    acquired: (X, Y, Z) in [-1, 1]; codes: the seeds from `diffae`; operators/images: the guiding
    views (each operator built for the dense grid). `progress(i, total, loss)` is called per step.
    init: (z_sem, x_T) to start from instead of the seeds (same shapes; a warm start from another
    frame); the seed term still pulls towards `codes`.
    """
    if init is not None:
        for name, a, b in (("z_sem", init[0], codes.z_sem), ("x_T", init[1], codes.x_T)):
            if tuple(a.shape) != tuple(b.shape):
                raise ValueError(f"lag warm start: {name} has shape {tuple(a.shape)}, the seeds {tuple(b.shape)}")
    # The model is frozen while the codes are optimised; the caller's flags are restored at the end.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        return _optimise(model, acquired, codes, factor, operators, images, config, progress, init)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _optimise(model, acquired, codes, factor, operators, images, config, progress, init=None) -> LagResult:
    if config.max_iterations < 1:
        raise ValueError(f"lag needs at least one iteration, got max_iterations = {config.max_iterations}")
    schedule = NoiseSchedule.linear(model.config.num_timesteps)
    seed_z, seed_x = codes.z_sem.detach().clone(), codes.x_T.detach().clone()
    acquired = acquired.to(seed_x.device)  # tensors follow the model and its codes (cardiorecon.device)
    start_z, start_x = (seed_z, seed_x) if init is None else (init[0].detach(), init[1].detach())
    z = start_z.to(seed_z).clone().requires_grad_(True)
    x_T = start_x.to(seed_x).clone().requires_grad_(True)
    opt = torch.optim.Adam([z, x_T], lr=config.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_halve_every, gamma=0.5)
    t0 = time.perf_counter()
    history, best, best_loss, since_best = [], None, float("inf"), 0
    best_lax, since_lax = float("inf"), 0
    best_iteration, stopped = 0, None
    agreement_before = None
    # The codes sit at the last inversion timestep; K-step decoding starts from exactly there.
    top = spaced_timesteps(schedule.num_timesteps, config.invert_steps, config.depth)[-1]
    def cond(z_sem):  # DMCVR codes carry the (fixed) interpolated morphology features
        return z_sem if codes.morph is None else (z_sem, codes.morph)

    def residual(steps: int):
        """new slices -> the start volume's plus their change from the decoded seeds (refinement), or as they are."""
        if codes.base is None:
            return lambda new: new
        with torch.no_grad():
            ref = ddim_sample(model.eps, seed_x, schedule, steps, cond=cond(seed_z), top=top)
        base = codes.base.to(ref)
        if codes.window is None:
            return lambda new: base + (new - ref)
        r0, r1, c0, c1 = codes.window
        X, Y = base.shape[-2:]
        return lambda new: base + torch.nn.functional.pad(new - ref, (c0, Y - c1, r0, X - r1))

    refine = residual(config.ddim_steps)
    for it in range(config.max_iterations):
        new = refine(ddim_sample(model.eps, x_T, schedule, config.ddim_steps, cond=cond(z),
                                 checkpoint=config.checkpoint, top=top))
        dense = assemble(acquired, new, codes, factor)
        l_lax = sum((lax_loss(op, dense, images[n]) for n, op in operators.items()), dense.sum() * 0.0)
        l_cont = continuity_loss(dense, codes.out_index)
        l_seed = torch.mean((x_T - seed_x) ** 2) + torch.mean((z - seed_z) ** 2)
        loss = config.lambda_lax * l_lax + config.lambda_cont * l_cont + config.lambda_seed * l_seed
        if agreement_before is None:
            agreement_before = lax_agreement(dense.detach(), operators, images)
        value = float(loss.detach())
        if not np.isfinite(value):
            if best is None:
                raise NumericalError(f"lag: the loss of the seed codes is not finite ({value}: LAX "
                                     f"{float(l_lax.detach())}, continuity {float(l_cont.detach())}, seed "
                                     f"{float(l_seed.detach())}); the model or the inputs produce NaN or infinite values")
            stopped = f"non-finite loss at iteration {it}; kept iteration {best_iteration}"
            break
        history.append({"iteration": it, "loss": value, "lax": float(l_lax.detach()), "continuity": float(l_cont.detach()),
                        "seed": float(l_seed.detach()), "lr": opt.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - t0})
        if value < best_loss - 1e-7:
            best_loss, since_best = value, 0
            best = (z.detach().clone(), x_T.detach().clone(), dense.detach().clone())
            best_iteration = it
        else:
            since_best += 1
            if since_best >= config.patience:
                break
        if config.lax_patience is not None and operators:
            lax_value = history[-1]["lax"]
            best_lax, since_lax = (lax_value, 0) if lax_value < best_lax - 1e-7 else (best_lax, since_lax + 1)
            if since_lax >= config.lax_patience:
                stopped = f"the LAX agreement stopped improving at iteration {it}; kept iteration {best_iteration}"
                break
        if progress is not None:
            progress(it + 1, config.max_iterations, value)
        if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    z_best, x_best, dense_best = best
    # A refinement (codes.base set) returns the very volume its objective scored, so that it never ends worse than
    # its start on the acquired evidence: a final decode with more steps changes the result after its loss was
    # taken (and costs two more decodes of every new slice: 70 s of 217 on a UK Biobank-sized phantom frame).
    if codes.base is None and config.final_decode_steps and config.final_decode_steps != config.ddim_steps:
        with torch.no_grad():
            new = ddim_sample(model.eps, x_best, schedule, config.final_decode_steps, cond=cond(z_best), top=top)
        dense_best = assemble(acquired, residual(config.final_decode_steps)(new), codes, factor)
    return LagResult(dense=dense_best.cpu().numpy(), history=history, agreement_before=agreement_before or {},
                     agreement_after=lax_agreement(dense_best, operators, images), iterations=len(history),
                     seconds=time.perf_counter() - t0, best_iteration=best_iteration, stopped=stopped,
                     codes=(z_best.cpu(), x_best.cpu()), seeds=(seed_z.cpu(), seed_x.cpu()))




@dataclass(frozen=True)
class LagOptions:
    """lag's settings: the optimisation (`LagConfig`), the LAX sampling across each view's thickness,
    where the codes start (`init`: diffae, dmcvr, register or fusion), the warm start over a cine
    (`warm`: off, previous or delta; `warm_iterations`), and what `register` / `fusion` starts and the
    fallback without any guiding view (diffae's steps and depth) use."""

    lag: LagConfig = LagConfig()
    lax_samples: int = 3
    init: str = "register"  # the shipped default (ReconConfig.lag_init): refine register
    warm: str = "off"
    warm_iterations: int | None = None
    register: object = None  # RegisterConfig
    fusion: object = None  # FusionConfig
    invert_steps: int = 8
    decode_steps: int = 8
    depth: float = 0.4

    def __post_init__(self):
        if self.init not in LAG_INITS:
            raise ValueError(f"unknown lag start {self.init!r}; choose from {', '.join(LAG_INITS)}")
        if self.warm not in LAG_WARM:
            raise ValueError(f"unknown lag warm start {self.warm!r}; choose from {', '.join(LAG_WARM)}")


@register_method
class LaxGuided(ReconMethod):
    """LAG-DiffAE: the codes of the new slices optimised so that the volume agrees with the LAX views."""

    name = "lag"
    summary = "register's volume refined by the prior so that it matches the guiding LAX views (LAG-DiffAE)"
    weights = "diffae"
    guided_by_lax = True
    adaptable = True
    seconds_per_frame = "9-25 s (ep_preclinical, biv-me, UK Biobank-sized phantom; 3 iterations on a 64 px window)"
    Options = LagOptions

    @classmethod
    def options_from(cls, config) -> LagOptions:
        return LagOptions(config.lag, config.lax_samples, config.lag_init, config.lag_warm, config.lag_warm_iterations,
                          config.register, config.fusion, config.invert_steps, config.decode_steps, config.depth)

    @classmethod
    def weights_for(cls, options: LagOptions):
        return "dmcvr" if options.init == "dmcvr" else "diffae"

    def check_model(self, model, notes: list[str]) -> None:
        super().check_model(model, notes)
        if self.options.init == "dmcvr":
            notes.append("lag starts from the dmcvr codes (DMCVR decoder, morphology features fixed)")

    def prepare(self, work: Work) -> None:
        o = self.options
        work.operators = guiding_views(work.study, work.grid, work.factor, work.lax_views, o.lax_samples, work.notes)
        if not work.operators:
            fallback = o.init if o.init in ("register", "fusion") else "dmcvr" if o.init == "dmcvr" else "diffae"
            msg = f"no LAX view guides this study: lag falls back to {fallback}"
            warnings.warn(msg)
            work.notes.append(msg)
        self.fusion_setup = None
        if o.init == "fusion":
            self.fusion_setup = FusionSetup.build(work, o.fusion, o.lax_samples, [])

    def start_codes(self, work: Work, frame: int) -> GapCodes:
        """The seeds of frame's new slices: interpolated codes (diffae, dmcvr), or the codes of the
        register / fusion volume."""
        o, lc = self.options, self.options.lag
        if o.init in ("register", "fusion"):
            return dense_codes(self.model, self.start_volume(work, frame), work.factor, lc.invert_steps, depth=lc.depth,
                               window=lc.window)
        return diffae_codes(self.model, work.stack(frame), work.factor, lc.invert_steps, depth=lc.depth)[1]

    def start_volume(self, work: Work, frame: int) -> np.ndarray:
        """The register (or, with init fusion, fusion) volume of `frame` that lag refines."""
        o, stack = self.options, work.stack(frame)
        start = register_stack(stack, work.factor, o.register)
        if self.fusion_setup is not None:
            fs = self.fusion_setup
            start = fuse(stack, start, fs.profile, fs.operators, fs.images(frame), o.fusion, fs.z_scale).dense
        return start

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        o = self.options
        stack = work.stack(frame)
        if not work.operators:  # no guiding view: the start volume (register, fusion) or the latent interpolation
            if o.init in ("register", "fusion"):
                return self.start_volume(work, frame)
            return reconstruct_diffae(self.model, stack, work.factor, o.invert_steps, o.decode_steps, depth=o.depth)[0]
        lc = o.lag
        codes = self.start_codes(work, frame)
        images = lax_images(work.study, work.operators, frame)
        init, prev = None, None
        if o.warm != "off" and work.follows(index):
            prev = work.results.get(work.frames[index - 1])
        if prev is not None and prev.codes is not None:  # warm start from the previous cine frame
            z_prev, x_prev = prev.codes
            if o.warm == "previous":
                init = (z_prev, x_prev)
            else:  # delta: this frame's seeds moved by the previous frame's correction
                init = (codes.z_sem + (z_prev - prev.seeds[0]).to(codes.z_sem),
                        codes.x_T + (x_prev - prev.seeds[1]).to(codes.x_T))
            if o.warm_iterations:
                lc = dataclasses.replace(lc, max_iterations=o.warm_iterations)
        step_bar = tqdm(total=lc.max_iterations, desc=f"  lag frame {frame}", unit="it", leave=False,
                        disable=not work.progress)

        def report(it, total, loss, bar=step_bar):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        res = optimise(self.model, torch.from_numpy(stack).float(), codes, work.factor, work.operators, images, lc,
                       report, init=init)
        res.warm = None if init is None else f"{o.warm} from frame {work.frames[index - 1]}"
        step_bar.close()
        work.results[frame] = res
        return res.dense


__all__ = ["LAG_INITS", "LAG_WARM", "LagConfig", "LagOptions", "LagResult", "LaxGuided", "SEED_SETTINGS", "continuity_loss", "match_intensity", "optimise"]
