"""The cohort command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import (DEVICE_HELP, FACTOR_HELP, FRAMES_HELP, LAG_WARM_HELP, app, check_lag_warm, check_out,
                                 fail, frames_or_fail, method_class, torch_device)


@app.command()
def cohort(data: list[Path] = typer.Argument(..., help="Subject folders (any layout), or folders of them"),
           out: Path = typer.Option(..., "--out", help="Output folder: cohort.csv, cohort.html, subjects/NAME/"),
           method: str = typer.Option("linear", "--method", help="Reconstruction method (see reconstruct)"),
           factor: int = typer.Option(5, "--factor", min=1, help=FACTOR_HELP),
           frames: str = typer.Option("all", "--frames", help=FRAMES_HELP),
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
    and a page; cohort.csv and cohort.html. Resumable (done subjects are skipped); failures are listed.
    Exit code 0 when every subject is done, 1 when some failed, 3 when none is done, 2 on bad options."""
    from cardiorecon.cohort import CohortOptions, run_cohort
    from cardiorecon.errors import CardioReconError

    method_class(method)
    if temporal not in ("probability", "intensity", "none"):
        fail(ValueError(f"--temporal must be probability, intensity or none, not {temporal!r}"))
    if align not in ("auto", "off"):
        fail(ValueError(f"--align must be auto or off, not {align!r}"))
    check_lag_warm(lag_warm, method)
    torch_device(device)  # fail here, not on every worker, when the device cannot be had
    check_out(out, list(data))  # issue 29: as reconstruct and segment (a file, /proc, inside an input folder)
    frames_or_fail(frames)
    options = CohortOptions(method=method, factor=factor, frames=frames, temporal=temporal,  # type: ignore[arg-type]
                            temporal_sigma=temporal_sigma, device=device,
                            weights=None if weights is None else str(weights.resolve()),
                            seg_weights=None if seg_weights is None else str(seg_weights.resolve()),
                            align=align, meshes=meshes, torch_threads=torch_threads, lag_warm=lag_warm)
    try:
        run = run_cohort(list(data), out, options, workers=workers, scheduler=scheduler, echo=typer.echo)
    except CardioReconError as exc:
        fail(exc)
    typer.echo(f"{run.done} done ({run.skipped} from earlier runs), {run.failed} failed, in {run.seconds:.0f} s")
    for r in run.rows:
        if r["status"] != "done":
            typer.echo(f"{r['status'].upper()} {r['subject']}: {r['error']}", err=True)
    typer.echo(f"wrote {run.csv} and {run.html}")
    code = cohort_exit_code(run)
    if code:
        raise typer.Exit(code=code)


def cohort_exit_code(run) -> int:
    """0: every subject done; 1: some failed (listed, the others done); 3: none done (every subject failed
    or was skipped as unrecognised); 2 is a bad command line or input, before any subject ran. In the
    README (Cohorts)."""
    if run.done == 0 and any(r["status"] != "done" for r in run.rows):
        return 3
    return 1 if run.failed else 0
