"""One interface for every reconstruction method.

`reconstruct(study, method, factor)` takes the study's `Plan` (made here from the images when not
given: phase pairing, alignment, heart region, working grid), puts the SAX on the working grid
(in-plane resample and crop around the heart, intensities in [-1, 1]), looks the method up by name
in the table (`recon.registry`) and runs it frame by frame, and re-wraps the dense stack as a Volume
whose affine keeps every acquired slice where it was (slice step / f).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cardiorecon.align import Alignment
from cardiorecon.autoencoder import ModelGrid, prepare_study
from cardiorecon.errors import InputError
from cardiorecon.geometry import resample, upsampled_affine, upsampled_num_slices, voxel_to_world, world_to_voxel
from cardiorecon.io.nifti import atomic_write, write_csv_rows, write_nifti
from cardiorecon.memory import PeakMemory
from cardiorecon.models.config import NAMED_CONFIGS
from cardiorecon.plan import Plan, make_plan, write_plan
from cardiorecon.recon.config import FAST_LAG, LAG_INITS, LAG_WARM, ReconConfig
from cardiorecon.recon.fusion import FusionResult
from cardiorecon.recon.interpolate import interpolate_stack
from cardiorecon.recon.lag import LagResult
from cardiorecon.recon.registry import Work, default_method_names, get_method
from cardiorecon.volume import FrameSelectionError, Study, Volume

#: The built-in methods a run of "every method" takes by default (`recon.registry.method_names()` lists
#: every registered one: those left out of the defaults and those registered later too).
METHODS: tuple[str, ...] = default_method_names()


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
    alignment: Alignment | None = None  # the breath-hold alignment applied before the method, if any
    fusion: dict[int, FusionResult] = field(default_factory=dict)  # per frame, for `fusion`
    plan: Plan | None = None  # the study's plan (written as plan.json beside the outputs)


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


def working_grid(model=None, config: ReconConfig = ReconConfig()) -> tuple[float, int]:
    """(pixel spacing mm, smallest side in pixels) of the working grid: the model's own, else (methods
    without weights) `config.grid_spacing_mm` / `config.grid_size` or the tiny model's."""
    if model is not None:
        return float(model.config.pixel_spacing_mm), int(model.config.image_size)
    tiny = NAMED_CONFIGS["tiny"]
    return float(config.grid_spacing_mm or tiny.pixel_spacing_mm), int(config.grid_size or tiny.image_size)


def reconstruct(study: Study, method: str, factor: int | None = None, spacing_mm: float | None = None,
                frames: str | int | list[int] = "all", lax_views: list[str] | None = None, model=None,
                config: ReconConfig = ReconConfig(), progress: bool = False, align="off",
                plan: Plan | None = None) -> Reconstruction:
    """Reconstruct the dense SAX of `study` with `method` (a name in `recon.registry`).

    factor (or spacing_mm) sets the through-plane upsampling: Z' = (Z - 1) f + 1, acquired slices
    unchanged at their world positions. `model` is the network the method needs (`weights_for`): a
    DiffAE (diffae, lag) or a DMCVR (dmcvr, and lag with `config.lag_init = "dmcvr"`: lag then starts
    from the dmcvr codes and decodes through the DMCVR decoder, the morphology features held fixed).
    `plan`: the study's `Plan` (`cardiorecon.plan`); without one it is made here from the images, with
    `align` ('auto', 'on', 'off' or an `Alignment`: breath-hold alignment of the SAX slices to the LAX
    views in `lax_views`, default all; 'off' keeps the acquired slices identical to the input).
    """
    method_class = get_method(method)
    f = resolve_factor(study, factor, spacing_mm)
    frame_list = study.resolve_frames(frames)
    notes: list[str] = []
    runner = method_class(method_class.options_for(config), model)
    runner.check_model(model, notes)
    spacing, size = working_grid(model, config)
    if plan is None:
        plan = make_plan(study, spacing, size, align, lax_views)
    elif abs(plan.grid_spacing_mm - spacing) > 1e-6 or plan.grid_size < size:
        raise InputError(study.meta.get("source"),
                         f"the plan's working grid ({plan.grid_size} px of {plan.grid_spacing_mm:g} mm) does not fit "
                         f"this model's ({size} px of {spacing:g} mm); make the plan for these weights")
    if plan.alignment is not None:
        notes += plan.alignment.notes
    study = plan.apply(study)  # phase pairing; estimated LAX offsets (if any) move the views' affines only
    # Breath-hold alignment (issue 13) is applied in the single in-plane resampling onto the working grid.
    grid = prepare_study(study, plan.grid_spacing_mm, plan.grid_size, region=plan.heart_region,
                         sax_shifts_mm=plan.sax_shifts_mm)
    adapt_seconds = 0.0
    if config.adapt and method_class.adaptable:  # a copy of the model; the argument is not changed
        from cardiorecon.recon.adapt import adapt, lax_slices, study_slices

        # the LAX views the method is given (lax_views; None: all), never a held-out one
        views = {n: study.lax[n] for n in (study.lax if lax_views is None else lax_views) if n in study.lax}
        lax = lax_slices(views, float(grid.image.spacing[0]), grid.image.spatial_shape[0], grid.centre)
        adapted = adapt(model, study_slices(grid.image.data), config.adapt, config.adapt_config, config.depth,
                        progress, lax=lax)
        runner.model, adapt_seconds = adapted.model, adapted.seconds
        notes.append(adapted.note + f" (spread over the {len(frame_list)} frame(s)' seconds)")
    X, Y, Z, _ = grid.image.shape
    dense = np.zeros((X, Y, upsampled_num_slices(Z, f), len(frame_list)), np.float32)
    work = Work(study, plan, grid, f, frame_list, lax_views, dense, progress, notes)
    runner.prepare(work)
    seconds = []
    bar = tqdm(frame_list, desc=f"{method} x{f}", unit="frame", disable=not progress)
    with PeakMemory() as mem:
        for i, t in enumerate(bar):
            t0 = time.perf_counter()
            dense[..., i] = runner.reconstruct_frame(work, i, t)
            seconds.append(time.perf_counter() - t0 + adapt_seconds / len(frame_list))
    dense_affine = upsampled_affine(grid.image.affine, f)
    normalised = Volume(dense, dense_affine, {"method": method, "factor": f, "frames": frame_list})
    volume = Volume(grid.intensity.inverse(dense), dense_affine,
                    {**normalised.meta, "slice_thickness_mm": study.sax.slice_thickness / f})
    lag = {t: r for t, r in work.results.items() if isinstance(r, LagResult)}
    fusion = {t: r for t, r in work.results.items() if isinstance(r, FusionResult)}
    return Reconstruction(method, f, frame_list, volume, normalised, grid, seconds, mem.peak_mb,
                          list(work.operators), lag, notes, plan.alignment, fusion=fusion, plan=plan)


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
    if recon.plan is not None:
        written.append(write_plan(recon.plan, out))
    from cardiorecon.io.nifti import json_text

    text = json_text(summary, default=float)  # NaN -> null: valid JSON
    written.append(atomic_write(out / f"recon_{recon.method}.json", lambda tmp: tmp.write_text(text), suffix=".json"))
    return written


__all__ = ["FAST_LAG", "LAG_INITS", "LAG_WARM", "METHODS", "PeakMemory", "ReconConfig", "Reconstruction", "reconstruct",
           "resolve_factor", "to_native", "working_grid", "write_reconstruction"]
