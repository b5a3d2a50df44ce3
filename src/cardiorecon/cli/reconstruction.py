"""The reconstruct command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import (ADAPT_OPTION, ALIGN_OPTION, DEVICE_OPTION, FACTOR_HELP, FRAMES_HELP, LAG_WARM_HELP,
                                 LAX_THICKNESS_OPTION, OPTION_HELP, app,
                                 check_lag_warm, check_method_option, check_out, fail, method_class, parse_frames,
                                 resolve_align, settable_options, torch_device, with_method_options)


@app.command()
def reconstruct(study: Path = typer.Argument(..., help="Subject folder (any layout) or NIfTI"),
                method: str = typer.Option(
                    "register", "--method",
                    help="A method of `cardiorecon methods`: nearest, linear, cubic, register, fusion, diffae, lag, "
                         "dmcvr or selfsr (default register: no weights, seconds a frame on a CPU, the best-measured "
                         "fast method on real scans, docs/BENCHMARKS.md; fusion also fits the LAX views, slower; lag "
                         "takes minutes a frame on a CPU)"),
                factor: Optional[int] = typer.Option(
                    None, "--factor", min=1, help=FACTOR_HELP + " (default 5 when --spacing is not given; give one "
                                                                "of the two)"),
                spacing: Optional[float] = typer.Option(
                    None, "--spacing", help="Target slice spacing (mm) instead of --factor: the factor is the acquired "
                                            "spacing over this, rounded"),
                frames: str = typer.Option("ed", "--frames", help=FRAMES_HELP),
                lax_views: Optional[str] = typer.Option(None, "--lax-views",
                                                        help="Comma-separated LAX views guiding lag and fusion, and "
                                                             "giving selfsr training pairs (default: all)"),
                weights: Optional[Path] = typer.Option(
                    None, "--weights", help="DiffAE weights, or DMCVR weights for dmcvr and --init dmcvr (default: shipped)"),
                native: bool = typer.Option(True, "--native/--no-native",
                                            help="Also write recon_METHOD_native.nii.gz: the input's own grid and "
                                                 "whole field of view (acquired slices as input; the method inside "
                                                 "the heart region, linear interpolation outside)"),
                invert_steps: int = typer.Option(8, "--invert-steps", min=1,
                                                 help="diffae, lag, dmcvr: DDIM inversion steps from each acquired "
                                                      "slice to its code x_T (more: closer codes, slower)"),
                decode_steps: int = typer.Option(8, "--decode-steps", min=1,
                                                 help="diffae, dmcvr: DDIM steps decoding each new slice from its "
                                                      "interpolated codes (more: sharper, slower)"),
                depth: float = typer.Option(0.4, "--depth", min=0.01, max=1.0,
                                            help="DDIM inversion depth (fraction of T; 1 = pure noise, as DiffAE)"),
                lag_iterations: Optional[int] = typer.Option(
                    None, "--lag-iterations", min=1,
                    help="lag: most Adam iterations per frame on the codes of the new slices (default 3, "
                         "FAST_LAG; it stops early when the loss stops falling)"),
                lag_window: Optional[int] = typer.Option(
                    None, "--lag-window", min=0,
                    help="lag refining register/fusion: optimise the central PX x PX pixels of each new slice, the "
                         "start volume outside (default 64, the prior's own field of view; 0: the whole slice, "
                         "several times slower)"),
                lag_steps: Optional[int] = typer.Option(
                    None, "--lag-ddim-steps", min=1,
                    help="lag: differentiable DDIM steps per decode inside the optimisation (default: "
                         "LagConfig.ddim_steps; each step costs about a decode's time and memory)"),
                init: str = typer.Option("register", "--init",
                                         help="lag only: refine the register or fusion volume (its new "
                                              "slices plus the change of their decoded codes), or start "
                                              "from the diffae codes, or from the dmcvr codes (DMCVR "
                                              "weights, morphology fixed)"),
                lag_warm: str = typer.Option("off", "--lag-warm", help=LAG_WARM_HELP),
                option: Optional[list[str]] = typer.Option(None, "--option", help=OPTION_HELP),
                align: str = ALIGN_OPTION,
                device: str = DEVICE_OPTION,
                adapt: Optional[int] = ADAPT_OPTION,
                lax_thickness: Optional[float] = LAX_THICKNESS_OPTION,
                plan: Optional[Path] = typer.Option(
                    None, "--plan", help="plan.json to reuse (from `cardiorecon plan` or an earlier run): heart region, "
                                         "working grid, alignment and phase pairing as written (--align is then unused)"),
                out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Reconstruct a dense SAX volume: on the input's own grid (recon_METHOD_native.nii.gz) and on the
    working grid around the heart (recon_METHOD.nii.gz)."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.recon import write_reconstruction
    from cardiorecon.recon.lag import LAG_INITS

    method_class(method)
    check_method_option("--init", init, "register", "init", method, LAG_INITS)
    check_lag_warm(lag_warm, method)
    if spacing is not None and not spacing > 0:
        fail(ValueError(f"--spacing must be a positive number of mm, got {spacing}"))
    if spacing is not None and factor is not None:  # issue 29: one of them was silently ignored
        fail(ValueError(f"--spacing {spacing:g} and --factor {factor}: give one of the two (the factor follows "
                        "from the spacing)"))
    if factor is None and spacing is None:
        factor = 5
    check_out(out, [study])
    dev = torch_device(device)
    cfg = with_method_options(method, option or [], recon_config(invert_steps, decode_steps, depth, lag_iterations,
                                                                 lag_steps, init, lag_warm, adapt, lag_window), dev)
    try:
        s = read_study(study, lax_thickness_mm=lax_thickness)
        views = [v.strip() for v in lax_views.split(",")] if lax_views else None
        rec = run_reconstruction(s, method, cfg, weights, dev, factor=factor,
                                 spacing_mm=spacing if factor is None else None, frames=parse_frames(frames),
                                 lax_views=views, plan_file=plan, align=align)
        paths = write_reconstruction(rec, out, s, native=native)
    except (CardioReconError, ValueError) as exc:
        fail(exc)
    for note in rec.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{method}: {len(rec.frames)} frame(s), factor {rec.factor}, "
               f"{sum(rec.seconds_per_frame) / len(rec.frames):.1f} s per frame")
    for p in paths:
        typer.echo(f"wrote {p}")


def recon_config(invert_steps: int, decode_steps: int, depth: float, lag_iterations: int | None,
                 lag_steps: int | None, init: str, lag_warm: str, adapt: int | None, lag_window: int | None = None):
    """The `ReconConfig` of the reconstruct command's options."""
    import dataclasses

    from cardiorecon.recon import ReconConfig

    lag = ReconConfig().lag
    if lag_iterations:
        lag = dataclasses.replace(lag, max_iterations=lag_iterations)
    if lag_steps:
        lag = dataclasses.replace(lag, ddim_steps=lag_steps)
    if lag_window is not None:
        lag = dataclasses.replace(lag, window=lag_window or None)
    return ReconConfig(invert_steps=invert_steps, decode_steps=decode_steps, depth=depth, lag=lag, lag_init=init,
                       lag_warm=lag_warm, adapt=ReconConfig().adapt if adapt is None else adapt)


def run_reconstruction(study, method: str, config, weights: Path | None, device, plan_file: Path | None = None,
                       align: str = "auto", lax_views: list[str] | None = None, **kwargs):
    """Load the network the method needs (the method table says which), take the plan from `plan_file`
    or make it with `align`, and reconstruct."""
    from cardiorecon.models.pretrained import load_network
    from cardiorecon.plan import read_plan
    from cardiorecon.errors import InputError
    from cardiorecon.qc import check_input_frames
    from cardiorecon.recon import get_method, reconstruct

    # A blank or constant frame asked for would pass as a volume of zeros (or of a prior's guesses from nothing):
    # refused here with quality control's own input rule; a cohort reconstructs it and its QC fails the subject.
    frames = study.resolve_frames(kwargs.get("frames", "all"))
    failed = [f for f in check_input_frames(study.sax.data[..., frames], frames, "the SAX cine") if f.level == "fail"]
    if failed:
        raise InputError(study.meta.get("source") or study.sax.meta.get("source"),
                         f"{failed[0].message}: no slice to reconstruct from; leave it out of --frames")
    cls = get_method(method)
    kind = cls.weights_for(cls.options_for(config))
    model = None if kind is None else load_network(kind, weights).to(device)
    if plan_file is not None:
        plan = read_plan(plan_file)
        typer.echo(f"plan from {plan_file}")
        return reconstruct(study, method, model=model, config=config, progress=True, plan=plan, lax_views=lax_views,
                           **kwargs)
    return reconstruct(study, method, model=model, config=config, progress=True, lax_views=lax_views,
                       align=resolve_align(study, align, lax_views), **kwargs)


@app.command("methods")
def list_methods() -> None:
    """List the reconstruction methods: what each needs and its typical seconds per frame."""
    from cardiorecon.recon import methods

    for name, cls in methods().items():
        needs = [f"{cls.weights} weights" if cls.weights else "no weights"]
        if cls.guided_by_lax:
            needs.append("LAX views (guides; works without)")
        needs.append("GPU optional")
        typer.echo(f"{name:8s} {cls.summary}\n         needs: {', '.join(needs)}; "
                   f"typical {cls.seconds_per_frame or '?'} per frame (docs/BENCHMARKS.md)")
        extras = [] if cls.in_defaults else ["in no default method list (name it)"]
        settable = settable_options(cls)
        if settable:
            extras.insert(0, "--option " + ", ".join(f"{k}={d}" for k, (_, d) in settable.items()))
        if extras:
            typer.echo("         " + "; ".join(extras))
