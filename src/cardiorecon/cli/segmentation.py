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
    """Segment the SAX (LV cavity 1, LV myocardium 2, RV cavity 3) on the input grid and the model grid;
    per-frame volumes in function.csv, LV/RV EDV, ESV, SV, EF and LV mass printed."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.io.nifti import write_nifti
    from cardiorecon.io.nifti import write_csv_rows
    from cardiorecon.metrics.function import study_function
    from cardiorecon.qc import segment_qc_line
    from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet, segment_study

    check_out(out, [study], ("seg_sa.nii.gz", "seg_sa_model_grid.nii.gz", "function.csv"))
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
    summary = None
    if s.meta.get("geometry", True) is False:
        # e.g. ACDC HDF5: the pixel size and slice spacing are unknown, so no volume can be given in mL
        typer.echo("no volumes: the input has no geometry (pixel size and slice spacing unknown)")
    else:
        rows, summary = study_function(native.data, s.sax.spacing.tolist(), frame_list, s.ed_frame, s.es_frame)
        csv_rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        typer.echo(f"wrote {write_csv_rows(out / 'function.csv', csv_rows, list(csv_rows[0]))}")
        typer.echo(function_text(summary))
    one_frame = summary is not None and summary["es_frame"] == ""
    typer.echo(segment_qc_line(s, frame_list, None if summary is None or one_frame else summary))


def function_text(summary: dict) -> str:
    """The clinical numbers of `metrics.function.study_function` in two lines (blank where undefined)."""
    def num(key: str, unit: str) -> str:
        v = summary.get(key)
        return "-" if not isinstance(v, float) or v != v else f"{v:.1f}{unit}"

    src = {"study": "the study's ED/ES frames", "curve": "largest/smallest LV cavity",
           "one frame": "one frame"}[str(summary["ed_es"])]
    lines = [f"ED frame {summary['ed_frame']}, ES frame {summary['es_frame'] if summary['es_frame'] != '' else '-'} ({src})"]
    for name in ("lv", "rv"):
        lines.append(f"{name.upper()}: EDV {num(f'{name}_edv_ml', ' mL')}  ESV {num(f'{name}_esv_ml', ' mL')}  "
                     f"SV {num(f'{name}_sv_ml', ' mL')}  EF {num(f'{name}_ef', ' %')}"
                     + (f"  mass {num('lv_mass_g', ' g')}" if name == "lv" else ""))
    return "\n".join(lines)
