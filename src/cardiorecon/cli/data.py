"""Commands that read and describe studies: info, phantom, overlay, align."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import app, check_out, fail


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
        fail(exc)
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
        fail(ValueError(f"--cohort must be healthy or heart-failure, got {cohort!r}"))
    check_out(out, [])
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
        fail(exc)
    typer.echo(f"wrote {path}")


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

    check_out(out, [study])  # issue 29: as reconstruct and segment (a file, /proc, inside the input)
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
        fail(exc)
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
