"""The `cardiorecon` console script: thin typer commands over library functions.

Heavy imports (torch, the readers) happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views.")


@app.callback()
def _root() -> None:
    """Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views."""


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


DEVICE_HELP = "Where the networks run: auto (CUDA when a GPU is visible, else CPU), cpu or cuda"
ALIGN_HELP = "Breath-hold alignment of the SAX slices to the LAX views first: auto (when a LAX view exists), on or off"
ADAPT_HELP = ("diffae, lag, dmcvr: fine-tune a copy of the model for STEPS steps on this study's own acquired "
              "SAX slices and its guiding LAX views first (0: off; default: ReconConfig.adapt)")
LAX_THICKNESS_HELP = ("LAX slice thickness in mm for every view (default: the header's, or 6 mm where the "
                      "header's is not a cine slice's, with a warning)")


def _device(name: str):
    """The torch device `--device` names (one clear line and exit 2 when it cannot be had)."""
    from cardiorecon.device import resolve_device
    from cardiorecon.errors import CardioReconError

    try:
        return resolve_device(name)
    except CardioReconError as exc:
        _fail(exc)


@app.command()
def info(path: Path = typer.Argument(..., help="Subject folder (UK Biobank, M&Ms-2, ACDC, DICOM) or NIfTI file"),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text")) -> None:
    """Print each view's shape, frames, spacing, thickness, orientation and LAX geometry."""
    from cardiorecon.describe import describe_study, format_description
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study

    try:
        description = describe_study(read_study(path))
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@app.command()
def phantom(out: Path = typer.Option(..., "--out", help="Folder to write subject folders into"),
            subjects: int = typer.Option(1, "--subjects", min=1, help="Number of subjects"),
            cohort: str = typer.Option("healthy", "--cohort", help="healthy or heart-failure"),
            seed: int = typer.Option(0, "--seed", help="Seed of the first subject (then seed+1, ...)"),
            frames: int = typer.Option(25, "--frames", min=4, help="Frames per cardiac cycle"),
            breath_hold: bool = typer.Option(False, "--breath-hold",
                                             help="Add per-slice in-plane breath-hold shifts (up to 4 mm)"),
            figure: bool = typer.Option(False, "--figure", help="Also write overlay.png per subject"),
            truth: bool = typer.Option(True, "--truth/--no-truth",
                                       help="Write the dense truth (skip it for training data: 2x faster)")) -> None:
    """Generate synthetic 4D cine subjects (UK Biobank layout) with their dense truth."""
    from cardiorecon.phantom import AcquisitionConfig, generate_cohort

    if cohort not in ("healthy", "heart-failure"):
        _fail(ValueError(f"--cohort must be healthy or heart-failure, got {cohort!r}"))
    _check_out(out, [])
    acq = AcquisitionConfig(breath_hold_shift_mm=4.0 if breath_hold else 0.0)
    folders = generate_cohort(out, subjects, cohort, seed, frames, acq, truth=truth)  # type: ignore[arg-type]
    if figure:
        from cardiorecon.io import read_study
        from cardiorecon.report.overlay import overlay_figure

        for folder in folders:
            typer.echo(f"wrote {overlay_figure(read_study(folder), folder / 'overlay.png', 0)}")


@app.command()
def overlay(study: Path = typer.Argument(..., help="Subject folder or DICOM folder"),
            out: Path = typer.Option(..., "--out", help="PNG to write"),
            frame: int = typer.Option(0, "--frame", help="Frame to show")) -> None:
    """Figure: SAX mid slice with the LAX intersection lines, each LAX view with the SAX slice lines."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.report.overlay import overlay_figure

    try:
        s = read_study(study)
        s.resolve_frames([frame])
        path = overlay_figure(s, out, frame)
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(f"wrote {path}")


@app.command()
def train(config: str = typer.Option("tiny", "--config",
                                     help="tiny, base, dmcvr_tiny, dmcvr_labels_tiny, or a YAML file of DiffAEConfig fields"),
          data: list[Path] = typer.Option(..., "--data", help="Subject folders, or folders of them (repeatable)"),
          out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds a checkpoint)"),
          init_from: Optional[Path] = typer.Option(None, "--init-from", help="Run folder or weights to start from"),
          holdout: Optional[list[Path]] = typer.Option(None, "--holdout", help="Subjects for the figures"),
          max_steps: int = typer.Option(20000, "--max-steps", min=1),
          batch_size: int = typer.Option(16, "--batch-size", min=1),
          lr: float = typer.Option(1e-4, "--lr"),
          precision: str = typer.Option("bf16-mixed", "--precision", help="bf16-mixed, 16-mixed or 32-true"),
          strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ..."),
          devices: str = typer.Option("1", "--devices", help="Devices per node (or 'auto')"),
          num_nodes: int = typer.Option(1, "--num-nodes", min=1),
          checkpoint_every: int = typer.Option(250, "--checkpoint-every", min=1),
          figure_every: int = typer.Option(1000, "--figure-every", min=1),
          seed: int = typer.Option(0, "--seed"),
          seg_weights: Optional[Path] = typer.Option(
              None, "--seg-weights", help="Segmentation network for a DMCVR config's morphology (default: shipped)"),
          exclude_frame: Optional[list[str]] = typer.Option(
              None, "--exclude-frame", help="SUBJECT:FRAME left out of training (held out), repeatable"),
          device: str = typer.Option("auto", "--device", help=DEVICE_HELP)) -> None:
    """Train the diffusion autoencoder, or DMCVR's morphology-conditioned one (resumable; --init-from to fine-tune)."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.training.diffae import TrainConfig, resolve_config
    from cardiorecon.training.diffae import train as train_diffae

    try:
        cfg = resolve_config(config)
        tc = TrainConfig(batch_size=batch_size, lr=lr, max_steps=max_steps, precision=precision,  # type: ignore[arg-type]
                         strategy=strategy, devices=int(devices) if devices.isdigit() else devices,
                         num_nodes=num_nodes, checkpoint_every=checkpoint_every, figure_every=figure_every, seed=seed,
                         accelerator="gpu" if _device(device).type == "cuda" else "cpu")
        excluded: dict[str, list[int]] = {}
        for item in exclude_frame or []:
            name, _, frame = item.rpartition(":")
            if not name or not frame.isdigit():
                raise typer.BadParameter(f"--exclude-frame expects SUBJECT:FRAME, got {item!r}")
            excluded.setdefault(name, []).append(int(frame))
        run = train_diffae(cfg, list(data), out, tc, init_from=init_from, holdout=list(holdout) if holdout else None,
                           exclude_frames=excluded, seg_weights=seg_weights)
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(f"run folder: {run} (EMA weights in {run / 'weights'})")


@app.command("train-seg")
def train_seg(data: list[Path] = typer.Option(..., "--data", help="Labelled subject folders, or folders of them"),
              out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds a checkpoint)"),
              holdout: Optional[list[Path]] = typer.Option(None, "--holdout", help="Labelled subjects to score"),
              exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Subject folder name to leave out"),
              max_steps: int = typer.Option(3000, "--max-steps", min=1),
              batch_size: int = typer.Option(32, "--batch-size", min=1),
              lr: float = typer.Option(1e-3, "--lr"),
              seed: int = typer.Option(0, "--seed"),
              tissue: Optional[Path] = typer.Option(
                  None, "--tissue", help="Phantom tissue stacks (scripts/train_seg_synth.py renders them): train the "
                                         "whole-field seg_synth network on synthetic appearance; --data then lists "
                                         "the contoured real scans (Sunnybrook, ep_preclinical)")) -> None:
    """Train the SAX segmentation network (resumable); scores Dice on --holdout."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.models.segnet import NAMED_SEG_CONFIGS, SegConfig
    from cardiorecon.segment import load_segnet
    from cardiorecon.training.segment import SegTrainConfig, build_seg_bank, evaluate_bank, train_segnet, write_scores

    if tissue is not None:
        from cardiorecon.training.segment import SynthTrainConfig, train_synth_segnet

        try:
            run = train_synth_segnet(NAMED_SEG_CONFIGS["seg_synth"], tissue, list(data), out,
                                     SynthTrainConfig(max_steps=max_steps, seed=seed))  # its own lr and batch
        except CardioReconError as exc:
            _fail(exc)
        typer.echo(f"run folder: {run} (weights in {run / 'weights'})")
        return
    try:
        cfg = SegConfig()
        run = train_segnet(cfg, list(data), out, SegTrainConfig(batch_size=batch_size, lr=lr, max_steps=max_steps,
                                                                 seed=seed), exclude=exclude or [])
        if holdout:
            scores = {str(h): evaluate_bank(load_segnet(run), build_seg_bank([h], cfg, progress=False))
                      for h in holdout}
            write_scores(run / "holdout_dice.json", scores)
            for h, s in scores.items():
                typer.echo(f"{h}: " + ", ".join(f"{k} Dice {v:.3f}" for k, v in s.items()))
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(f"run folder: {run} (weights in {run / 'weights'})")


@app.command()
def segment(study: Path = typer.Argument(..., help="Subject folder (any layout) or NIfTI volume"),
            weights: Optional[Path] = typer.Option(None, "--weights", help="Segmentation weights (default: shipped)"),
            frames: str = typer.Option("all", "--frames", help="ed, es, all or a frame index"),
            align: str = typer.Option("auto", "--align",
                                    help=ALIGN_HELP),
            device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
            out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Segment the SAX (LV cavity 1, LV myocardium 2, RV cavity 3) on the input grid and the model grid."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.io.nifti import write_nifti
    from cardiorecon.metrics import ventricular_function
    from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet, segment_study

    _check_out(out, [study], ("seg_sa.nii.gz", "seg_sa_model_grid.nii.gz"))
    try:
        s = read_study(study)
        net = load_segnet(DEFAULT_WINDOW_SEGNET if weights is None else weights).to(_device(device))
        frame_list = s.resolve_frames(_frames(frames))
        alignment = _alignment(s, align, None)
        model_grid, native = segment_study(net, s, frame_list,
                                           sax_shifts_mm=None if alignment is None else alignment.sax_shifts_mm)
        out.mkdir(parents=True, exist_ok=True)
        for vol, name in ((native, "seg_sa.nii.gz"), (model_grid, "seg_sa_model_grid.nii.gz")):
            typer.echo(f"wrote {write_nifti(vol, out / name)}")
    except CardioReconError as exc:
        _fail(exc)
    if s.ed_frame in frame_list and s.es_frame is not None and s.es_frame in frame_list:
        lab = native.data if native.data.ndim == 4 else native.data[..., None]
        fn = ventricular_function(lab[..., frame_list.index(s.ed_frame)], lab[..., frame_list.index(s.es_frame)],
                                  s.sax.spacing.tolist())
        typer.echo("  ".join(f"{k} {v:.1f}" for k, v in fn.items()))


def _check_align(align: str) -> None:
    if align not in ("auto", "on", "off"):
        _fail(ValueError(f"--align must be auto, on or off, not {align!r}"))


def _alignment(study, align: str, views):
    """The breath-hold alignment `--align` asks for (None for off, or auto without LAX), with its
    notes and shifts echoed."""
    from cardiorecon.align import resolve_alignment

    _check_align(align)
    alignment = resolve_alignment(study, align, views)
    if alignment is not None:
        for note in alignment.notes:
            typer.echo(f"note: {note}")
        rms = float((alignment.sax_shifts_mm ** 2).sum(1).mean() ** 0.5)
        typer.echo(f"aligned with {','.join(alignment.lax_views) or 'no LAX view'}: shifts RMS {rms:.2f} mm, "
                   f"intersection NCC {alignment.mean_ncc('before'):.3f} -> {alignment.mean_ncc('after'):.3f} "
                   f"({alignment.seconds:.1f} s)")
    return alignment


@app.command()
def align(study: Path = typer.Argument(..., help="Subject folder (any layout)"),
          lax_views: Optional[str] = typer.Option(None, "--lax-views",
                                                  help="Comma-separated LAX views to align with (default: all)"),
          bound: float = typer.Option(10.0, "--bound", min=0.5, help="Largest shift searched (mm)"),
          lax_offsets: bool = typer.Option(False, "--lax-offsets",
                                           help="Also estimate each LAX view's offset along its normal (2+ views)"),
          out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Breath-hold alignment: an in-plane shift per SAX slice (all frames) from the agreement with the LAX
    views along every intersection line; writes alignment.json and the aligned SAX (sa_aligned.nii.gz)."""
    from cardiorecon.align import AlignConfig, estimate_alignment, write_alignment
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study

    try:
        s = read_study(study)
        views = [v.strip() for v in lax_views.split(",")] if lax_views else None
        alignment = estimate_alignment(s, views, AlignConfig(bound_mm=bound, lax_offsets=lax_offsets))
        paths = write_alignment(alignment, s, out)
        if alignment.lines:
            from cardiorecon.report.alignment import alignment_figure, alignment_overlay_figure

            name = str(s.meta.get("subject") or study.name)
            paths.append(alignment_figure({(name, tuple(alignment.lax_views)): alignment}, out / "alignment.png"))
            paths.append(alignment_overlay_figure(s, alignment, out / "alignment_overlay.png"))
    except CardioReconError as exc:
        _fail(exc)
    for note in alignment.notes:
        typer.echo(f"note: {note}")
    for k, (dr, dc) in enumerate(alignment.sax_shifts_mm):
        typer.echo(f"slice {k:2d}: d_row {dr:+6.2f} mm  d_col {dc:+6.2f} mm")
    if any(alignment.lax_offsets_mm.values()):
        typer.echo("LAX offsets along their normals (mm): "
                   + ", ".join(f"{v} {o:+.2f}" for v, o in alignment.lax_offsets_mm.items()))
    typer.echo(f"intersection NCC (mean of {len(alignment.lines)} lines) {alignment.mean_ncc('before'):.3f} -> "
               f"{alignment.mean_ncc('after'):.3f}; {alignment.seconds:.1f} s")
    for p in paths:
        typer.echo(f"wrote {p}")


def _frames(frames: str):
    """--frames text -> 'ed' | 'es' | 'all' | index | [indices]; FrameSelectionError (exit 2) otherwise."""
    from cardiorecon.volume import parse_frames

    return parse_frames(frames)


#: the files `evaluate` and `report` write into --out (an input there is refused before any work)
_REPORT_FILES = ("results.csv", "summary.md", "report.html", "failures.csv")


def _check_out(out: Path, inputs: list[Path], names: tuple[str, ...] = ()) -> None:
    """Refuse an unusable --out before any work starts (exit 2, one line)."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io.nifti import check_output_folder

    try:
        check_output_folder(out, list(inputs), names)
    except CardioReconError as exc:
        _fail(exc)


LAG_WARM_HELP = ("lag over a cine: start each frame from the previous frame's optimised codes (previous), "
                 "from its own seeds plus the previous frame's correction (delta), or from its own seeds (off)")


def _check_lag_warm(lag_warm: str, method: str) -> None:
    from cardiorecon.recon.pipeline import LAG_WARM

    if lag_warm not in LAG_WARM:
        _fail(ValueError(f"--lag-warm must be one of {', '.join(LAG_WARM)}, not {lag_warm!r}"))
    if lag_warm != "off" and method != "lag":
        _fail(ValueError(f"--lag-warm {lag_warm} applies to --method lag, not {method}"))


@app.command()
def reconstruct(study: Path = typer.Argument(..., help="Subject folder (any layout) or NIfTI"),
                method: str = typer.Option("lag", "--method", help="nearest, linear, cubic, register, fusion, diffae, lag or dmcvr"),
                factor: Optional[int] = typer.Option(None, "--factor", min=1, help="Through-plane upsampling factor"),
                spacing: Optional[float] = typer.Option(None, "--spacing", help="Target slice spacing (mm)"),
                frames: str = typer.Option("ed", "--frames", help="ed, es, all or a frame index"),
                lax_views: Optional[str] = typer.Option(None, "--lax-views",
                                                        help="Comma-separated LAX views guiding lag and fusion (default: all)"),
                weights: Optional[Path] = typer.Option(
                    None, "--weights", help="DiffAE weights, or DMCVR weights for dmcvr and --init dmcvr (default: shipped)"),
                native: bool = typer.Option(True, "--native/--no-native",
                                            help="Also write recon_METHOD_native.nii.gz: the input's own grid and "
                                                 "whole field of view (acquired slices as input; the method inside "
                                                 "the heart region, linear interpolation outside)"),
                invert_steps: int = typer.Option(8, "--invert-steps", min=1),
                decode_steps: int = typer.Option(8, "--decode-steps", min=1),
                depth: float = typer.Option(0.4, "--depth", min=0.01, max=1.0,
                                            help="DDIM inversion depth (fraction of T; 1 = pure noise, as DiffAE)"),
                lag_iterations: Optional[int] = typer.Option(None, "--lag-iterations", min=1),
                lag_steps: Optional[int] = typer.Option(None, "--lag-ddim-steps", min=1),
                init: str = typer.Option("diffae", "--init",
                                         help="lag only: start from the diffae codes, from the dmcvr codes "
                                              "(DMCVR weights, morphology fixed), or from the codes of the "
                                              "register or fusion volume"),
                lag_warm: str = typer.Option("off", "--lag-warm", help=LAG_WARM_HELP),
                align: str = typer.Option("auto", "--align",
                                    help=ALIGN_HELP),
                device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
                adapt: Optional[int] = typer.Option(
                    None, "--adapt", min=0, help=ADAPT_HELP),
                lax_thickness: Optional[float] = typer.Option(
                    None, "--lax-thickness", help=LAX_THICKNESS_HELP),
                out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Reconstruct a dense SAX volume: on the input's own grid (recon_METHOD_native.nii.gz) and on the
    working grid around the heart (recon_METHOD.nii.gz)."""
    import dataclasses

    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.recon import METHODS, ReconConfig, write_reconstruction
    from cardiorecon.recon import reconstruct as run

    if method not in METHODS:
        _fail(ValueError(f"--method must be one of {', '.join(METHODS)}"))
    if init not in ("diffae", "dmcvr", "register", "fusion"):
        _fail(ValueError(f"--init must be diffae, dmcvr, register or fusion, not {init!r}"))
    if init != "diffae" and method != "lag":
        _fail(ValueError(f"--init {init} applies to --method lag, not {method}"))
    _check_lag_warm(lag_warm, method)
    if spacing is not None and not spacing > 0:
        _fail(ValueError(f"--spacing must be a positive number of mm, got {spacing}"))
    if factor is None and spacing is None:
        factor = 5
    _check_out(out, [study])
    dev = _device(device)
    try:
        s = read_study(study, lax_thickness_mm=lax_thickness)
        model = None
        if method in ("diffae", "lag") and init != "dmcvr":
            from cardiorecon.models.pretrained import load_diffae

            model = load_diffae(weights)
        elif method == "dmcvr" or init == "dmcvr":
            from cardiorecon.models.pretrained import load_dmcvr

            model = load_dmcvr(weights)
        if model is not None:
            model = model.to(dev)
        lag = ReconConfig().lag
        if lag_iterations:
            lag = dataclasses.replace(lag, max_iterations=lag_iterations)
        if lag_steps:
            lag = dataclasses.replace(lag, ddim_steps=lag_steps)
        cfg = ReconConfig(invert_steps=invert_steps, decode_steps=decode_steps, depth=depth, lag=lag,
                          lag_init=init if init in ("register", "fusion") else "diffae", lag_warm=lag_warm,
                          adapt=ReconConfig().adapt if adapt is None else adapt)
        cfg = dataclasses.replace(cfg, selfsr=dataclasses.replace(cfg.selfsr, device=str(dev)))  # selfsr's CNN
        views = [v.strip() for v in lax_views.split(",")] if lax_views else None
        rec = run(s, method, factor=factor, spacing_mm=spacing if factor is None else None, frames=_frames(frames),
                  lax_views=views, model=model, config=cfg, progress=True, align=_alignment(s, align, views))
        paths = write_reconstruction(rec, out, s, native=native)
    except (CardioReconError, ValueError) as exc:
        _fail(exc)
    for note in rec.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{method}: {len(rec.frames)} frame(s), factor {rec.factor}, "
               f"{sum(rec.seconds_per_frame) / len(rec.frames):.1f} s per frame")
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
def evaluate(data: list[Path] = typer.Argument(..., help="Subject folders, or folders of them"),
             protocol: str = typer.Option("phantom", "--protocol", help="phantom, slice-drop or lax-holdout"),
             methods: str = typer.Option("nearest,linear,cubic,diffae,lag", "--methods",
                                         help="Comma-separated methods to compare"),
             factor: int = typer.Option(5, "--factor", min=2, help="Upsampling factor (phantom, lax-holdout)"),
             frames: str = typer.Option("ed-es", "--frames", help="ed-es, ed, es, all or a frame index"),
             weights: Optional[Path] = typer.Option(None, "--weights", help="DiffAE weights (default: shipped)"),
             seg_weights: Optional[Path] = typer.Option(None, "--seg-weights",
                                                        help="Segmentation weights (default: shipped)"),
             dmcvr_weights: Optional[Path] = typer.Option(None, "--dmcvr-weights",
                                                          help="DMCVR weights for dmcvr (default: shipped)"),
             no_segmentation: bool = typer.Option(False, "--no-segmentation", help="Skip Dice/HD95/EF"),
             max_subjects: Optional[int] = typer.Option(None, "--max-subjects", min=1),
             align: str = typer.Option("auto", "--align",
                                    help=ALIGN_HELP),
             device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
             adapt: Optional[int] = typer.Option(
                 None, "--adapt", min=0, help=ADAPT_HELP),
             lax_thickness: Optional[float] = typer.Option(
                 None, "--lax-thickness", help=LAX_THICKNESS_HELP),
             out: Path = typer.Option(..., "--out", help="Output folder for the CSV, summary, figures and HTML")) -> None:
    """Run an evaluation protocol for several methods on the same cases; write CSV, Markdown, figures, HTML."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.evaluate import PROTOCOLS, Evaluator
    from cardiorecon.recon import METHODS
    from cardiorecon.errors import InputError
    from cardiorecon.io.discover import discover_studies
    from cardiorecon.report.evaluation import markdown, write_csv, write_report
    from cardiorecon.segment import DEFAULT_SEGNET

    if protocol not in PROTOCOLS:
        _fail(ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}"))
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        _fail(ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}"))
    _check_out(out, list(data), _REPORT_FILES)
    try:
        found = discover_studies(list(data))
        for path, why in found.skipped:
            typer.echo(f"skipped {path}: {why}", err=True)
        folders = found.studies[:max_subjects]
        if not folders:
            raise InputError(data[0], "no study found (UK Biobank, M&Ms-2, ACDC or DICOM layout)")
        _check_align(align)
        from cardiorecon.recon import ReconConfig

        ev = Evaluator(method_list, align=align, lax_thickness_mm=lax_thickness,
                       config=ReconConfig(adapt=ReconConfig().adapt if adapt is None else adapt)).load(
            weights, dmcvr_weights,
            # the phantom protocol is scored by the phantom's own segmenter (see demo.py), real scans by segnet_synth
            seg_weights if seg_weights is not None or protocol != "phantom" else DEFAULT_SEGNET,
            segmentation=not no_segmentation)
        dev = _device(device)
        for attr in ("model", "dmcvr", "segnet"):  # tensors follow the models (cardiorecon.device)
            if getattr(ev, attr, None) is not None:
                setattr(ev, attr, getattr(ev, attr).to(dev))
        out.mkdir(parents=True, exist_ok=True)
        # Rows so far and failures are written after every case: a long run cut off keeps what it did.
        ev.on_rows = lambda so_far: (write_csv(so_far, out / "results.csv"),
                                     _write_failures(ev.failures, out / "failures.csv"))
        kwargs = {"factor": factor} if protocol != "slice-drop" else {"frames": frames}
        if protocol == "lax-holdout":
            kwargs["frames"] = frames
        rows = PROTOCOLS[protocol](ev, folders, **kwargs)
        _write_failures(ev.failures + [{"case": p.name, "folder": str(p), "error": f"skipped: {w}"}
                                       for p, w in found.skipped], out / "failures.csv")
        if not rows:
            raise InputError(folders[0] if len(folders) == 1 else data[0],
                             "every case failed: " + "; ".join(f"{f['case']}: {f['error']}" for f in ev.failures))
        intro = (f"Protocol {protocol} on {len(folders)} case(s), methods {', '.join(method_list)}"
                 + (f", factor {factor}" if protocol != "slice-drop" else ", every other slice dropped (factor 2)"))
        from cardiorecon.report.provenance import from_evaluator

        prov = from_evaluator(ev, protocol, factor if protocol != "slice-drop" else 2)
        written = write_report(rows, ev.figures, method_list, out, f"cardiorecon evaluation: {protocol}", intro,
                               provenance=prov, failures=ev.failures + [{"case": p.name, "error": f"skipped: {w}"}
                                                                        for p, w in found.skipped])
    except (CardioReconError, ValueError) as exc:
        _fail(exc)
    typer.echo("\n" + markdown(written["summary"]))
    for f in ev.failures:
        typer.echo(f"FAILED {f['case']}: {f['error']}", err=True)
    typer.echo(f"report: {written['html']}  (rows: {written['csv']}, table: {written['markdown']})")


def _write_failures(failures: list[dict], path: Path) -> None:
    """failures.csv (case, folder, error), atomically; removed when nothing failed."""
    from cardiorecon.io.nifti import write_csv_rows

    if not failures:
        path.unlink(missing_ok=True)
        return
    write_csv_rows(path, failures, ["case", "folder", "error"])


@app.command()
def cohort(data: list[Path] = typer.Argument(..., help="Subject folders (any layout), or folders of them"),
           out: Path = typer.Option(..., "--out", help="Output folder: cohort.csv, cohort.html, subjects/NAME/"),
           method: str = typer.Option("linear", "--method", help="Reconstruction method (see reconstruct)"),
           factor: int = typer.Option(5, "--factor", min=1, help="Through-plane upsampling factor"),
           frames: str = typer.Option("all", "--frames", help="all, ed, es, an index, or comma-separated indices"),
           workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                                 help="LocalCluster workers (default: one per core, at most one per "
                                                      "subject)"),
           scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                                   help="Address of a running Dask scheduler (tcp://HOST:PORT) "
                                                        "instead of a LocalCluster"),
           temporal: str = typer.Option("none", "--temporal",
                                        help="4D consistency of the segmentation: none (each frame alone; measured "
                                             "best on the phantom), probability (class probabilities smoothed over "
                                             "the cycle) or intensity"),
           temporal_sigma: float = typer.Option(0.75, "--temporal-sigma", min=0.0, help="Gaussian width in frames"),
           weights: Optional[Path] = typer.Option(None, "--weights",
                                                  help="DiffAE (diffae, lag) or DMCVR (dmcvr) weights (default: shipped)"),
           seg_weights: Optional[Path] = typer.Option(None, "--seg-weights", help="Segmentation weights"),
           align: str = typer.Option("auto", "--align", help="Breath-hold alignment to the LAX views: auto or off"),
           meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Surface meshes at ED and ES"),
           device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
           torch_threads: Optional[int] = typer.Option(None, "--torch-threads", min=1,
                                                       help="Torch threads per worker (default: cores / workers)"),
           lag_warm: str = typer.Option("off", "--lag-warm", help=LAG_WARM_HELP),
           ) -> None:
    """Every subject, every frame: align, reconstruct (4D), segment; per subject the dense 4D NIfTI (native
    and working grid), 4D labels, volume curves (CSV, PNG), EDV/ESV/SV/EF, LV mass, ED/ES meshes (STL, PLY)
    and a page; cohort.csv and cohort.html. Resumable (done subjects are skipped); failures are listed."""
    from cardiorecon.cohort import CohortOptions, run_cohort
    from cardiorecon.errors import CardioReconError
    from cardiorecon.recon import METHODS

    if method not in METHODS:
        _fail(ValueError(f"--method must be one of {', '.join(METHODS)}"))
    if temporal not in ("probability", "intensity", "none"):
        _fail(ValueError(f"--temporal must be probability, intensity or none, not {temporal!r}"))
    if align not in ("auto", "off"):
        _fail(ValueError(f"--align must be auto or off, not {align!r}"))
    _check_lag_warm(lag_warm, method)
    _device(device)  # fail here, not on every worker, when the device cannot be had
    options = CohortOptions(method=method, factor=factor, frames=frames, temporal=temporal,  # type: ignore[arg-type]
                            temporal_sigma=temporal_sigma, device=device,
                            weights=None if weights is None else str(weights.resolve()),
                            seg_weights=None if seg_weights is None else str(seg_weights.resolve()),
                            align=align, meshes=meshes, torch_threads=torch_threads, lag_warm=lag_warm)
    try:
        run = run_cohort(list(data), out, options, workers=workers, scheduler=scheduler, echo=typer.echo)
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(f"{run.done} done ({run.skipped} from earlier runs), {run.failed} failed, in {run.seconds:.0f} s")
    for r in run.rows:
        if r["status"] != "done":
            typer.echo(f"{r['status'].upper()} {r['subject']}: {r['error']}", err=True)
    typer.echo(f"wrote {run.csv} and {run.html}")


@app.command()
def report(results: list[Path] = typer.Argument(..., help="results.csv files of `cardiorecon evaluate` runs"),
           title: str = typer.Option("cardiorecon evaluation", "--title"),
           failures: Optional[Path] = typer.Option(None, "--failures",
                                                   help="CSV of failed cases (columns case, error) to list"),
           out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Merge evaluation runs (e.g. split across machines) into one CSV, summary, figures and HTML."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.report.evaluation import markdown, read_csv, read_failures, write_report
    from cardiorecon.report.provenance import collect

    _check_out(out, list(results) + ([failures] if failures else []), _REPORT_FILES)
    try:
        for p in results + ([failures] if failures else []):
            if not p.is_file():
                raise typer.BadParameter(f"{p}: no such file")
        rows = read_csv(list(results))
        methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "truth-image"]
        cases = len({r["case"] for r in rows})
        written = write_report(rows, {}, methods, out, title,
                               f"{cases} case(s) merged from {len(results)} run(s): {', '.join(map(str, results))}",
                               provenance=collect(extra={"merged_from": [str(p) for p in results]}),
                               failures=read_failures(failures) if failures else None)
    except CardioReconError as exc:
        _fail(exc)
    typer.echo("\n" + markdown(written["summary"]))
    typer.echo(f"report: {written['html']}")


@app.command()
def encode(study: Path = typer.Argument(..., help="Subject folder or NIfTI"),
           out: Path = typer.Option(..., "--out", help="Codes file (.safetensors or .npz)"),
           frames: str = typer.Option("all", "--frames", help="ed, es, all or a frame index"),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           invert_steps: int = typer.Option(100, "--invert-steps", min=1)) -> None:
    """Encode every SAX slice: z_sem by the semantic encoder, x_T by DDIM inversion."""
    from cardiorecon.codes import encode_study, save_codes
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.models.pretrained import load_diffae

    try:
        codes = encode_study(load_diffae(weights), read_study(study), _frames(frames), invert_steps)
        path = save_codes(codes, out)
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(f"wrote {path}: z_sem {tuple(codes['z_sem'].shape)}, x_T {tuple(codes['x_T'].shape)}")


@app.command()
def decode(codes: Path = typer.Argument(..., help="Codes file written by `cardiorecon encode`"),
           out: Path = typer.Option(..., "--out", help="NIfTI to write (model grid, scanner units)"),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           decode_steps: int = typer.Option(20, "--decode-steps", min=1)) -> None:
    """Decode codes back to a volume on the model grid (the encoded slices, DDIM-decoded)."""
    from cardiorecon.codes import decode_codes, load_codes
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import write_nifti
    from cardiorecon.models.pretrained import load_diffae

    try:
        volume = decode_codes(load_diffae(weights), load_codes(codes), decode_steps)
        typer.echo(f"wrote {write_nifti(volume, out)}")
    except CardioReconError as exc:
        _fail(exc)


@app.command()
def sample(out: Path = typer.Option(..., "--out", help="PNG grid to write (and NAME.nii.gz beside it)"),
           num: int = typer.Option(16, "--num", min=1),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           decode_steps: int = typer.Option(20, "--decode-steps", min=1),
           latent_steps: int = typer.Option(50, "--latent-steps", min=1),
           seed: int = typer.Option(0, "--seed")) -> None:
    """Sample new SAX slices: z_sem from the latent DDIM, x_T from N(0, I), decoded by DDIM."""
    from cardiorecon.codes import sample_slices, write_sample_grid
    from cardiorecon.errors import CardioReconError
    from cardiorecon.models.pretrained import load_diffae, load_latent

    try:
        model = load_diffae(weights)
        latent = load_latent(weights)
        x = sample_slices(model, latent, num, decode_steps, latent_steps, seed)
        for p in write_sample_grid(x, out, model.config.pixel_spacing_mm):
            typer.echo(f"wrote {p}")
    except CardioReconError as exc:
        _fail(exc)


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder"),
         methods: str = typer.Option("nearest,linear,cubic,register,fusion,diffae,lag,dmcvr", "--methods",
                                     help="Comma-separated methods"),
         subjects: int = typer.Option(2, "--subjects", min=1, help="Phantom subjects to generate and score"),
         align: str = typer.Option("auto", "--align",
                                    help=ALIGN_HELP)) -> None:
    """The main job on the built-in default: the phantom protocol end to end. Generates heart-failure
    phantom subjects, reconstructs their ED and ES 10 mm SAX stacks at 2 mm with each method
    (shipped weights), segments the results and scores them against the phantom's truth
    (SSIM/PSNR, Dice/HD95, EF); writes the CSV, summary, figures and an HTML report."""
    from cardiorecon.demo import run_demo
    from cardiorecon.errors import CardioReconError

    try:
        _check_align(align)
        run_demo(out, [m.strip() for m in methods.split(",") if m.strip()], subjects=subjects, echo=typer.echo,
                 align=align)
    except CardioReconError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
