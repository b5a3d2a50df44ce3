"""The plan command: what a study needs before any method runs, written as plan.json and said in words."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import ALIGN_HELP, LAX_THICKNESS_HELP, app, check_align, check_out, fail


@app.command("plan")
def plan_study(study: Path = typer.Argument(..., help="Subject folder (any layout) or NIfTI"),
               out: Path = typer.Option(..., "--out", help="Folder to write plan.json into"),
               align: str = typer.Option("auto", "--align", help=ALIGN_HELP),
               lax_views: Optional[str] = typer.Option(None, "--lax-views",
                                                       help="Comma-separated LAX views to align with (default: all)"),
               weights: Optional[Path] = typer.Option(
                   None, "--weights", help="Make the working grid of these DiffAE or DMCVR weights (default: the "
                                           "shipped models' grid, which every method shares)"),
               lax_thickness: Optional[float] = typer.Option(None, "--lax-thickness", help=LAX_THICKNESS_HELP)) -> None:
    """Compute the study's plan from its images (heart region, working grid, breath-hold alignment, SAX -> LAX
    phase pairing, ED/ES), write plan.json and print it in words; `reconstruct --plan` reuses it."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.plan import make_plan, write_plan
    from cardiorecon.recon.pipeline import working_grid

    check_align(align)
    check_out(out, [study], ("plan.json",))
    try:
        s = read_study(study, lax_thickness_mm=lax_thickness)
        spacing, size = working_grid()
        if weights is not None:  # the grid of these weights (their config beside them)
            from cardiorecon.models.config import DiffAEConfig, read_config
            from cardiorecon.models.pretrained import resolve_weights

            config = read_config(resolve_weights(weights), DiffAEConfig)
            spacing, size = config.pixel_spacing_mm, config.image_size
        views = [v.strip() for v in lax_views.split(",")] if lax_views else None
        plan = make_plan(s, spacing, size, align, views)
        path = write_plan(plan, out)
    except (CardioReconError, ValueError) as exc:
        fail(exc)
    typer.echo(plan.describe())
    typer.echo(f"wrote {path}")
