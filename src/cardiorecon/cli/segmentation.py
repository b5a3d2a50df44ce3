"""The segment command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import (ALIGN_HELP, DEVICE_HELP, FRAMES_HELP, app, check_out, fail, parse_frames,
                                 resolve_align, torch_device)


@app.command()
def segment(study: Path = typer.Argument(..., help="Subject folder (any layout) or NIfTI volume"),
            weights: Optional[Path] = typer.Option(None, "--weights", help="Segmentation weights (default: shipped)"),
            frames: str = typer.Option("all", "--frames", help=FRAMES_HELP),
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

    check_out(out, [study], ("seg_sa.nii.gz", "seg_sa_model_grid.nii.gz"))
    try:
        s = read_study(study)
        net = load_segnet(DEFAULT_WINDOW_SEGNET if weights is None else weights).to(torch_device(device))
        frame_list = s.resolve_frames(parse_frames(frames))
        alignment = resolve_align(s, align, None)
        model_grid, native = segment_study(net, s, frame_list,
                                           sax_shifts_mm=None if alignment is None else alignment.sax_shifts_mm)
        out.mkdir(parents=True, exist_ok=True)
        for vol, name in ((native, "seg_sa.nii.gz"), (model_grid, "seg_sa_model_grid.nii.gz")):
            typer.echo(f"wrote {write_nifti(vol, out / name)}")
    except CardioReconError as exc:
        fail(exc)
    if s.ed_frame in frame_list and s.es_frame is not None and s.es_frame in frame_list:
        lab = native.data if native.data.ndim == 4 else native.data[..., None]
        fn = ventricular_function(lab[..., frame_list.index(s.ed_frame)], lab[..., frame_list.index(s.es_frame)],
                                  s.sax.spacing.tolist())
        typer.echo("  ".join(f"{k} {v:.1f}" for k, v in fn.items()))
