"""One interface for every reconstruction method.

`reconstruct(study, method, factor)` unwraps the Study onto the model grid (in-plane resample and
crop around the heart, intensities in [-1, 1]), runs the method frame by frame, and re-wraps the
dense stack as a Volume whose affine keeps every acquired slice where it was (slice step / f).
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from cardiorecon.autoencoder import ModelGrid, prepare_study
from cardiorecon.errors import InputError
from cardiorecon.geometry import resample, upsampled_affine, upsampled_num_slices, voxel_to_world, world_to_voxel
from cardiorecon.io.nifti import atomic_write, write_csv_rows, write_nifti
from cardiorecon.models.config import NAMED_CONFIGS
from cardiorecon.preprocess import intensity_map
from cardiorecon.recon.interpolate import interpolate_stack
from cardiorecon.recon.lag import LagConfig, LagResult, optimise
from cardiorecon.recon.latent_interp import dense_codes, diffae_codes, reconstruct_diffae
from cardiorecon.recon.adapt import AdaptConfig
from cardiorecon.recon.fusion import FusionConfig, FusionResult, SliceProfile, coarsen_view, fuse
from cardiorecon.recon.lax import LaxOperator
from cardiorecon.recon.register import RegisterConfig, register_stack
from cardiorecon.recon.selfsr import SelfSRConfig, prepare as prepare_selfsr
from cardiorecon.volume import FrameSelectionError, Study, Volume

Method = Literal["nearest", "linear", "cubic", "register", "fusion", "diffae", "lag", "dmcvr", "selfsr"]
METHODS: tuple[str, ...] = ("nearest", "linear", "cubic", "register", "fusion", "diffae", "lag", "dmcvr", "selfsr")
CLASSICAL = ("nearest", "linear", "cubic")
LAG_WARM = ("off", "previous", "delta")  # ReconConfig.lag_warm
PER_SUBJECT = ("register", "fusion")  # no weights: the subject's own images (recon/register.py, fusion.py)

#: This project's CPU default for `lag`. Measured on hf_2000 (ED+ES, factor 5, pretrained tiny
#: weights, 1 thread beside other jobs): K=2 DDIM steps, 20 iterations: SSIM 0.729, LAX NCC 0.979,
#: 379 s/frame; K=1 step from the 0.4 T codes, 10 iterations: SSIM 0.787, LAX NCC 0.976, 108 s/frame
#: (linear: 0.685 / 0.956). Full benchmark against the seed's settings: scripts/benchmark_recon.py.
FAST_LAG = LagConfig(ddim_steps=1, invert_steps=8, depth=0.4, max_iterations=10, lr=2e-2, lr_halve_every=5,
                     patience=5, final_decode_steps=8)


@dataclass(frozen=True)
class ReconConfig:
    invert_steps: int = 8
    decode_steps: int = 8
    lag: LagConfig = FAST_LAG
    lax_samples: int = 3
    # diffae: how far DDIM inversion goes, as a fraction of T. 1.0 is the DiffAE paper (x_T pure
    # noise). Measured on hf_2000 (ED+ES, factor 5): adjacent slices' full-depth x_T are nearly
    # orthogonal (cosine ~0.05: they encode each slice's own noise), so their slerp decodes to a new
    # random image: SSIM of the new slices 0.565 (linear 0.685). Codes at 0.4 T keep the anatomy:
    # SSIM 0.755, PSNR 20.6 dB (linear 20.35), and 8 steps instead of 20.
    depth: float = 0.4
    grid_spacing_mm: float | None = None  # classical methods without weights: the tiny model grid
    grid_size: int | None = None
    register: RegisterConfig = RegisterConfig()
    fusion: FusionConfig = FusionConfig()
    lag_init: str = "diffae"  # lag's start: the diffae codes, or the codes of the register / fusion volume
    # lag over a cine (4D reuse, issue 17): a frame whose previous cine frame was optimised starts from
    # that frame's optimised codes ('previous'), from its own seeds plus that frame's correction
    # ('delta'), or from its own seeds ('off'); the seed term always anchors to its own seeds.
    # 'off' by measurement (docs/BENCHMARKS.md, Cohorts; 1 phantom x 8 frames, 10 iterations): 'delta' lowered
    # the loss (last 0.32 -> 0.21-0.28) and raised the LAX NCC (0.979 -> 0.983) but moved the new slices
    # away from the truth (SSIM 0.821 -> 0.758; LV/RV curve RMS 1.27/2.09 -> 1.37/2.88 mL).
    lag_warm: str = "off"
    lag_warm_iterations: int | None = None  # iterations of a warm-started frame (None: lag.max_iterations)
    # diffae, lag, dmcvr: fine-tune a copy of the model for this many steps on the study's own acquired
    # SAX slices (all frames) and its given LAX views (on the model grid) before reconstructing; 0 = the
    # shipped weights as they are (recon/adapt.py)
    adapt: int = 0
    adapt_config: AdaptConfig = AdaptConfig()
    selfsr: SelfSRConfig = SelfSRConfig()  # issue 26 (recon/selfsr.py)


@dataclass
class Reconstruction:
    """Dense SAX on the model grid: `volume` in scanner units, `normalised` in [-1, 1]."""

    method: str
    factor: int
    frames: list[int]
    volume: Volume
    normalised: Volume
    grid: ModelGrid
    seconds_per_frame: list[float]
    peak_memory_mb: float
    lax_views: list[str] = field(default_factory=list)
    lag: dict[int, LagResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    alignment: object | None = None  # cardiorecon.align.Alignment applied before the method, if any
    fusion: dict[int, FusionResult] = field(default_factory=dict)  # per frame, for `fusion`


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs (sampled at 50 Hz)."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self):
        self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())


#: a dense stack larger than this is refused (a typo such as --factor 500 would exhaust the memory)
MAX_DENSE_SLICES = 2048


def resolve_factor(study: Study, factor: int | None, spacing_mm: float | None) -> int:
    if (factor is None) == (spacing_mm is None):
        raise ValueError("give exactly one of factor or spacing_mm")
    source = study.sax.meta.get("source")
    if factor is None:
        step = float(study.sax.spacing[2])
        if not (isinstance(spacing_mm, (int, float)) and np.isfinite(spacing_mm) and spacing_mm > 0):
            raise InputError(source, f"the target slice spacing must be a positive number of mm, got {spacing_mm!r}")
        ratio = step / spacing_mm
        factor = int(round(ratio)) if ratio < 2 ** 31 else 2 ** 31
        if factor < 1 or abs(step / factor - spacing_mm) > 0.25 * spacing_mm:
            raise InputError(source, f"slice step {step:.2f} mm cannot be divided into {spacing_mm} mm slices")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise FrameSelectionError(source, f"the upsampling factor must be an integer >= 1, got {factor!r}")
    dense = (study.sax.spatial_shape[2] - 1) * int(factor) + 1
    if dense > MAX_DENSE_SLICES:
        raise FrameSelectionError(source, f"factor {factor} gives {dense} slices; at most {MAX_DENSE_SLICES} are allowed")
    return int(factor)


def lax_frame(view: Volume, t: int, num_frames: int) -> np.ndarray:
    """The LAX frame of the same cardiac phase as SAX frame t of num_frames (the pairing that
    `read_study` stored: the view's ED/ES files, trigger times, image agreement for an ED/ES-only
    SAX, else the fraction of the cycle; see io.phase)."""
    from cardiorecon.io.phase import lax_frame_index

    if view.data.ndim == 3:
        return view.data[:, :, 0]
    return view.data[:, :, 0, lax_frame_index(view, t, num_frames)]


def guiding_views(study: Study, grid: ModelGrid, factor: int, lax_views: list[str] | None, samples: int,
                  notes: list[str]) -> dict[str, LaxOperator]:
    """LAX operators on the dense model grid for the chosen views; views that miss the stack
    are reported by name and skipped."""
    names = list(study.lax) if lax_views is None else list(lax_views)
    missing = [n for n in names if n not in study.lax]
    if missing:
        raise InputError(study.meta.get("source"), f"LAX view(s) {missing} not in this study (has {sorted(study.lax)})")
    dense_affine = upsampled_affine(grid.image.affine, factor)
    X, Y, Z = grid.image.spatial_shape
    shape = (X, Y, upsampled_num_slices(Z, factor))
    ops = {}
    for n in names:
        op = LaxOperator.for_view(dense_affine, shape, study.lax[n], samples)
        if op.num_valid == 0:
            msg = f"LAX view {n!r} does not cross the SAX stack; skipped"
            warnings.warn(msg)
            notes.append(msg)
            continue
        ops[n] = op
    return ops


def reconstruct(study: Study, method: str, factor: int | None = None, spacing_mm: float | None = None,
                frames: str | int | list[int] = "all", lax_views: list[str] | None = None, model=None,
                config: ReconConfig = ReconConfig(), progress: bool = False, align="off") -> Reconstruction:
    """Reconstruct the dense SAX of `study` with `method` (see METHODS).

    factor (or spacing_mm) sets the through-plane upsampling: Z' = (Z - 1) f + 1, acquired slices
    unchanged at their world positions. `model` is a DiffAE (needed by diffae and lag) or a DMCVR
    (models.dmcvr, needed by dmcvr). `lag` with a DMCVR model starts from the `dmcvr` codes and
    decodes through the DMCVR decoder, the interpolated morphology features held fixed (`--init dmcvr`).
    `align` ('auto', 'on', 'off' or a `cardiorecon.align.Alignment`): breath-hold alignment of the
    SAX slices to the LAX views in `lax_views` (default all) before the method; 'off' keeps the
    acquired slices identical to the input.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if config.lag_warm not in LAG_WARM:
        raise ValueError(f"unknown lag warm start {config.lag_warm!r}; choose from {', '.join(LAG_WARM)}")
    f = resolve_factor(study, factor, spacing_mm)
    frame_list = study.resolve_frames(frames)
    notes: list[str] = []
    if method in CLASSICAL + PER_SUBJECT + ("selfsr",) and model is None:
        tiny = NAMED_CONFIGS["tiny"]
        spacing, size = config.grid_spacing_mm or tiny.pixel_spacing_mm, config.grid_size or tiny.image_size
    else:
        if model is None:
            raise ValueError(f"method {method!r} needs a {'DMCVR' if method == 'dmcvr' else 'DiffAE'} model")
        is_dmcvr = hasattr(model, "morphology")
        if method == "dmcvr" and not is_dmcvr:
            raise ValueError("method 'dmcvr' needs DMCVR weights (a decoder with the morphology input), "
                             "not plain DiffAE weights")
        if method == "diffae" and is_dmcvr:
            raise ValueError(f"method {method!r} needs plain DiffAE weights, not DMCVR weights")
        if method == "lag" and is_dmcvr:
            notes.append("lag starts from the dmcvr codes (DMCVR decoder, morphology features fixed)")
        spacing, size = model.config.pixel_spacing_mm, model.config.image_size
    from cardiorecon.align import offset_views, resolve_alignment

    # Breath-hold alignment (issue 13): estimated from the guiding views only, applied in the single
    # in-plane resampling onto the working grid. align: 'auto' | 'on' | 'off' or an Alignment.
    alignment = resolve_alignment(study, align, lax_views)
    if alignment is not None:
        notes += alignment.notes
        study = offset_views(study, alignment)  # estimated LAX offsets (if any) move the views' affines only
    grid = prepare_study(study, spacing, size,
                         sax_shifts_mm=None if alignment is None else alignment.sax_shifts_mm)
    adapt_seconds = 0.0
    if config.adapt and method in ("diffae", "lag", "dmcvr"):  # a copy of the model; the argument is not changed
        from cardiorecon.recon.adapt import adapt, lax_slices, study_slices

        # the LAX views the method is given (lax_views; None: all), never a held-out one
        views = {n: study.lax[n] for n in (study.lax if lax_views is None else lax_views) if n in study.lax}
        lax = lax_slices(views, float(grid.image.spacing[0]), grid.image.spatial_shape[0], grid.centre)
        adapted = adapt(model, study_slices(grid.image.data), config.adapt, config.adapt_config, config.depth,
                        progress, lax=lax)
        model, adapt_seconds = adapted.model, adapted.seconds
        notes.append(adapted.note + f" (spread over the {len(frame_list)} frame(s)' seconds)")
    operators: dict[str, LaxOperator] = {}
    if method == "lag":
        operators = guiding_views(study, grid, f, lax_views, config.lax_samples, notes)
        if not operators:
            msg = f"no LAX view guides this study: lag falls back to {'dmcvr' if is_dmcvr else 'diffae'}"
            warnings.warn(msg)
            notes.append(msg)
    X, Y, Z, _ = grid.image.shape
    dense = np.zeros((X, Y, upsampled_num_slices(Z, f), len(frame_list)), np.float32)
    seconds, lag_results, fusion_results, sr = [], {}, {}, None
    if method == "fusion" or (method == "lag" and config.lag_init == "fusion"):
        # The SAX slice profile (thickness in dense slice steps) and TV's through-plane scale.
        dense_step = float(grid.image.spacing[2]) / f
        profile = SliceProfile.build(Z, f, study.sax.slice_thickness / dense_step, config.fusion.profile)
        z_scale = float(grid.image.spacing[0]) / dense_step
        # The LAX views block-averaged to the grid's pixel size (their footprint; recon/fusion.py).
        fusion_study = dataclasses.replace(study, lax={n: coarsen_view(v, float(grid.image.spacing[0]))
                                                       for n, v in study.lax.items()})
        fusion_ops = guiding_views(fusion_study, grid, f, lax_views, config.lax_samples,
                                   notes if method == "fusion" else [])
        if method == "fusion":
            operators = fusion_ops
    bar = tqdm(frame_list, desc=f"{method} x{f}", unit="frame", disable=not progress)
    with PeakMemory() as mem:
        for i, t in enumerate(bar):
            t0 = time.perf_counter()
            stack = grid.image.data[..., t]
            if method == "selfsr":  # trained once on the requested frames, its time spread over them
                if sr is None:
                    sr = prepare_selfsr(study, grid, f, frame_list, lax_views, config.selfsr, progress, notes)
                    t0, adapt_seconds = t0 + sr.seconds, sr.seconds
                dense[..., i] = sr.reconstruct(stack, t)
            elif method in CLASSICAL:
                dense[..., i] = interpolate_stack(stack, f, method)  # type: ignore[arg-type]
            elif method in PER_SUBJECT:
                start = register_stack(stack, f, config.register)
                if method == "fusion":
                    adjacent = i > 0 and (t - frame_list[i - 1]) % study.num_frames == 1
                    fit_bar = tqdm(total=config.fusion.iterations, desc=f"  fusion frame {t}", unit="it", leave=False,
                                   disable=not progress)
                    res = fuse(stack, start, profile, fusion_ops, _lax_images(fusion_study, fusion_ops, t), config.fusion,
                               z_scale, previous=dense[..., i - 1] if adjacent else None,
                               gains=fusion_results[frame_list[i - 1]].gains if adjacent else None,
                               progress=lambda it, total, loss, bar=fit_bar: bar.update(1))
                    fit_bar.close()
                    fusion_results[t] = res
                    start = res.dense
                dense[..., i] = start
            elif method in ("diffae", "dmcvr") or not operators:
                dense[..., i] = reconstruct_diffae(model, stack, f, config.invert_steps, config.decode_steps,
                                                     depth=config.depth)[0]
            else:
                lc = config.lag
                if config.lag_init in PER_SUBJECT:  # lag --init register|fusion: codes of that volume
                    start = register_stack(stack, f, config.register)
                    if config.lag_init == "fusion":
                        start = fuse(stack, start, profile, fusion_ops, _lax_images(fusion_study, fusion_ops, t),
                                     config.fusion, z_scale).dense
                    codes = dense_codes(model, start, f, lc.invert_steps, depth=lc.depth)
                else:
                    acquired, codes = diffae_codes(model, stack, f, lc.invert_steps, depth=lc.depth)
                images = _lax_images(study, operators, t)
                init, prev = None, None
                if config.lag_warm != "off" and i > 0 and (t - frame_list[i - 1]) % study.num_frames == 1:
                    prev = lag_results.get(frame_list[i - 1])
                if prev is not None and prev.codes is not None:  # warm start from the previous cine frame
                    z_prev, x_prev = prev.codes
                    if config.lag_warm == "previous":
                        init = (z_prev, x_prev)
                    else:  # delta: this frame's seeds moved by the previous frame's correction
                        init = (codes.z_sem + (z_prev - prev.seeds[0]).to(codes.z_sem),
                                codes.x_T + (x_prev - prev.seeds[1]).to(codes.x_T))
                    if config.lag_warm_iterations:
                        lc = dataclasses.replace(lc, max_iterations=config.lag_warm_iterations)
                step_bar = tqdm(total=lc.max_iterations, desc=f"  lag frame {t}", unit="it", leave=False,
                                disable=not progress)

                def report(it, total, loss, bar=step_bar):
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")

                res = optimise(model, torch.from_numpy(stack).float(), codes, f, operators, images, lc, report,
                               init=init)
                res.warm = None if init is None else f"{config.lag_warm} from frame {frame_list[i - 1]}"
                step_bar.close()
                lag_results[t] = res
                dense[..., i] = res.dense
            seconds.append(time.perf_counter() - t0 + adapt_seconds / len(frame_list))
    dense_affine = upsampled_affine(grid.image.affine, f)
    normalised = Volume(dense, dense_affine, {"method": method, "factor": f, "frames": frame_list})
    volume = Volume(grid.intensity.inverse(dense), dense_affine,
                    {**normalised.meta, "slice_thickness_mm": study.sax.slice_thickness / f})
    return Reconstruction(method, f, frame_list, volume, normalised, grid, seconds, mem.peak_mb,
                          list(operators), lag_results, notes, alignment, fusion=fusion_results)


def _lax_images(study: Study, operators: dict[str, LaxOperator], t: int) -> dict[str, torch.Tensor]:
    """The guiding LAX frames paired with SAX frame t, each mapped to [-1, 1] on its own."""
    images = {}
    for n in operators:
        lax_img = lax_frame(study.lax[n], t, study.num_frames)
        images[n] = torch.from_numpy(intensity_map(lax_img).forward(lax_img))
    return images


#: Width (mm) of the seam inside the working grid's edge over which the method's volume fades into
#: linear interpolation of the input (no visible step where the heart region ends).
SEAM_MM = 10.0


def native_sax(recon: Reconstruction, study: Study) -> Volume:
    """The acquired SAX on its own grid as the method saw it: the input itself, or, where breath-hold
    alignment moved slices, each slice shifted by its estimate (resampled once, in-plane only)."""
    shifts = None if recon.alignment is None else getattr(recon.alignment, "sax_shifts_mm", None)
    if shifts is None or not np.any(np.asarray(shifts)):
        return study.sax
    from cardiorecon.geometry import resample_slices

    return resample_slices(study.sax, study.sax.affine, study.sax.spatial_shape, np.asarray(shifts))


def seam_weight(grid_affine: np.ndarray, grid_shape: tuple[int, int], native_affine: np.ndarray,
                native_shape: tuple[int, int], seam_mm: float = SEAM_MM) -> np.ndarray:
    """(X, Y) weight of the working-grid volume at each native pixel: 1 deeper than `seam_mm` inside
    the working grid, falling linearly to 0 at its edge, 0 outside (both grids share the slice planes)."""
    X, Y = native_shape
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    world = voxel_to_world(native_affine, np.stack([ii, jj, np.zeros_like(ii)], -1))
    g = world_to_voxel(grid_affine, world)
    px = np.linalg.norm(grid_affine[:3, :2], axis=0)
    depth = np.minimum.reduce([g[..., 0] * px[0], (grid_shape[0] - 1 - g[..., 0]) * px[0],
                               g[..., 1] * px[1], (grid_shape[1] - 1 - g[..., 1]) * px[1]])
    return np.clip(depth / max(seam_mm, 1e-6), 0.0, 1.0).astype(np.float32)


def to_native(recon: Reconstruction, study: Study, seam_mm: float = SEAM_MM) -> Volume:
    """The dense volume on the input's own in-plane grid and whole field of view.

    Acquired slices are the input's own values (bit for bit without alignment; with alignment, the
    input shifted by its estimate, resampled once). New slices: the method inside the heart region
    (the working grid), linear interpolation of the input outside it, blended across a `seam_mm`
    seam. Nothing is blank where the input is not."""
    f = recon.factor
    sax = native_sax(recon, study)
    X, Y, Z = sax.spatial_shape
    Zd = upsampled_num_slices(Z, f)
    target = upsampled_affine(sax.affine, f)
    method = resample(recon.volume, target, (X, Y, Zd), order=1).data
    if method.ndim == 3:
        method = method[..., None]
    w = seam_weight(recon.volume.affine, recon.volume.spatial_shape[:2], target, (X, Y), seam_mm)[..., None]
    out = np.empty((X, Y, Zd, len(recon.frames)), np.float32)
    for i, t in enumerate(recon.frames):
        acquired = sax.data[..., t]
        base = interpolate_stack(np.asarray(acquired, np.float32), f, "linear")
        out[..., i] = w * method[..., i] + (1 - w) * base
        out[:, :, ::f, i] = acquired  # the acquired slices exactly as input (or as aligned)
    meta = {**recon.volume.meta, "native": True, "seam_mm": seam_mm}
    return Volume(out, target, meta)


def write_reconstruction(recon: Reconstruction, out: str | Path, study: Study | None = None,
                         native: bool = True) -> list[Path]:
    """Write the dense NIfTI (and the native-grid one), and for lag the loss curves and the
    per-view LAX agreement before and after."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_nifti(recon.volume, out / f"recon_{recon.method}.nii.gz")]
    if native:
        if study is None:
            raise ValueError("native output needs the study")
        written.append(write_nifti(to_native(recon, study), out / f"recon_{recon.method}_native.nii.gz"))
    summary = {"method": recon.method, "factor": recon.factor, "frames": recon.frames,
               "seconds_per_frame": recon.seconds_per_frame, "peak_memory_mb": recon.peak_memory_mb,
               "lax_views": recon.lax_views, "notes": recon.notes, "centre_from": recon.grid.centre_source,
               "heart_region": None if recon.grid.region is None else recon.grid.region.to_json(),
               "working_grid": {"shape": list(recon.grid.image.spatial_shape),
                                "spacing_mm": [float(x) for x in recon.grid.image.spacing]}}
    if recon.alignment is not None:
        summary["alignment"] = recon.alignment.to_json()
    if recon.fusion:  # per frame: the fit's evaluations, data term first and last, residual on the acquired slices
        summary["fusion"] = {str(t): {"evaluations": len(r.history), "data_first": r.history[0]["data"],
                                      "data_last": r.history[-1]["data"], "sax_residual_rms": r.sax_residual_rms,
                                      "lax_gain_offset": r.gains, "seconds": r.seconds}
                             for t, r in recon.fusion.items()}
    if recon.lag:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        summary["lax_agreement"] = {str(t): {"before": r.agreement_before, "after": r.agreement_after,
                                             "iterations": r.iterations, "warm_start": r.warm}
                                    for t, r in recon.lag.items()}
        rows = [{"frame": t, **h} for t, r in recon.lag.items() for h in r.history]
        written.append(write_csv_rows(out / "lag_loss.csv", rows, list(rows[0])))
        fig, ax = plt.subplots(figsize=(6, 4))
        for t, r in recon.lag.items():
            ax.plot([h["loss"] for h in r.history], label=f"frame {t}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.set_title("LAG-DiffAE loss")
        if len(recon.lag) <= 10:
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(atomic_write(out / "lag_loss.png", lambda tmp: fig.savefig(tmp, dpi=100), suffix=".png"))
        plt.close(fig)
    text = json.dumps(summary, indent=2, default=float)
    written.append(atomic_write(out / f"recon_{recon.method}.json", lambda tmp: tmp.write_text(text), suffix=".json"))
    return written


__all__ = ["FAST_LAG", "METHODS", "ReconConfig", "Reconstruction", "reconstruct", "to_native",
           "write_reconstruction"]
