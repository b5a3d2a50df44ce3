"""Commands that score and report: evaluate, report, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import (ADAPT_OPTION, ALIGN_OPTION, DEVICE_OPTION, FRAMES_HELP, LAX_THICKNESS_OPTION,
                                 REPORT_FILES, app, check_align, check_out, fail, frames_or_fail, torch_device)


@app.command()
def evaluate(data: list[Path] = typer.Argument(..., help="Subject folders, or folders of them"),
             protocol: str = typer.Option("phantom", "--protocol", help="phantom, slice-drop or lax-holdout"),
             methods: str = typer.Option("nearest,linear,cubic,register", "--methods",
                                         help="Comma-separated methods to compare (default: the fast ones, seconds "
                                              "a frame on a CPU; add fusion, diffae, dmcvr or lag (minutes a frame "
                                              "on a CPU) by name)"),
             factor: int = typer.Option(5, "--factor", min=2,
                                        help="Through-plane upsampling factor f of the phantom and lax-holdout "
                                             "protocols: f - 1 new slices per gap (slice-drop always uses 2)"),
             frames: str = typer.Option("ed-es", "--frames",
                                        help="ed-es (ED and ES where known, else ED, else frame 0), or " + FRAMES_HELP),
             weights: Optional[Path] = typer.Option(None, "--weights", help="DiffAE weights (default: shipped)"),
             seg_weights: Optional[Path] = typer.Option(None, "--seg-weights",
                                                        help="Segmentation weights (default: shipped)"),
             dmcvr_weights: Optional[Path] = typer.Option(None, "--dmcvr-weights",
                                                          help="DMCVR weights for dmcvr (default: shipped)"),
             no_segmentation: bool = typer.Option(False, "--no-segmentation", help="Skip Dice/HD95/EF"),
             max_subjects: Optional[int] = typer.Option(None, "--max-subjects", min=1),
             align: str = ALIGN_OPTION,
             device: str = DEVICE_OPTION,
             adapt: Optional[int] = ADAPT_OPTION,
             lax_thickness: Optional[float] = LAX_THICKNESS_OPTION,
             out: Path = typer.Option(..., "--out", help="Output folder for the CSV, summary, figures and HTML")) -> None:
    """Run an evaluation protocol for several methods on the same cases; write CSV, Markdown, figures, HTML."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.evaluate import PROTOCOLS, Evaluator
    from cardiorecon.recon import method_names
    from cardiorecon.errors import InputError
    from cardiorecon.io.discover import discover_studies
    from cardiorecon.report.evaluation import markdown, write_csv, write_report
    from cardiorecon.segment import DEFAULT_SEGNET

    if protocol not in PROTOCOLS:
        fail(ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}"))
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_list if m not in method_names()]
    if unknown:
        fail(ValueError(f"unknown method(s) {unknown}; choose from {', '.join(method_names())}"))
    check_out(out, list(data), REPORT_FILES)
    if frames != "ed-es":
        frames_or_fail(frames)
    try:
        found = discover_studies(list(data))
        for path, why in found.skipped:
            typer.echo(f"skipped {path}: {why}", err=True)
        folders = found.studies[:max_subjects]
        if not folders:
            raise InputError(data[0], "no study found (UK Biobank, M&Ms-2, ACDC or DICOM layout)")
        check_align(align)
        from cardiorecon.recon import ReconConfig

        ev = Evaluator(method_list, align=align, lax_thickness_mm=lax_thickness,
                       config=ReconConfig(adapt=ReconConfig().adapt if adapt is None else adapt)).load(
            weights, dmcvr_weights,
            # the phantom protocol is scored by the phantom's own segmenter (see demo.py), real scans by segnet_synth
            seg_weights if seg_weights is not None or protocol != "phantom" else DEFAULT_SEGNET,
            segmentation=not no_segmentation)
        dev = torch_device(device)
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
        fail(exc)
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
def report(results: list[Path] = typer.Argument(..., help="results.csv files of `cardiorecon evaluate` runs"),
           title: str = typer.Option("cardiorecon evaluation", "--title"),
           failures: Optional[Path] = typer.Option(None, "--failures",
                                                   help="CSV of failed cases (columns case, error) to list"),
           out: Path = typer.Option(..., "--out", help="Output folder")) -> None:
    """Merge evaluation runs (e.g. split across machines) into one CSV, summary, figures and HTML."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.report.evaluation import markdown, read_csv, read_failures, write_report
    from cardiorecon.report.provenance import collect

    check_out(out, list(results) + ([failures] if failures else []), REPORT_FILES)
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
        fail(exc)
    typer.echo("\n" + markdown(written["summary"]))
    typer.echo(f"report: {written['html']}")


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder"),
         methods: str = typer.Option("nearest,linear,cubic,register,fusion,diffae,lag,dmcvr", "--methods",
                                     help="Comma-separated methods"),
         subjects: int = typer.Option(2, "--subjects", min=1, help="Phantom subjects to generate and score"),
         align: str = ALIGN_OPTION) -> None:
    """The main job on the built-in default: the phantom protocol end to end. Generates heart-failure
    phantom subjects, reconstructs their ED and ES 10 mm SAX stacks at 2 mm with each method
    (shipped weights), segments the results and scores them against the phantom's truth
    (SSIM/PSNR, Dice/HD95, EF); writes the CSV, summary, figures and an HTML report."""
    from cardiorecon.demo import run_demo
    from cardiorecon.errors import CardioReconError

    try:
        check_align(align)
        run_demo(out, [m.strip() for m in methods.split(",") if m.strip()], subjects=subjects, echo=typer.echo,
                 align=align)
    except CardioReconError as exc:
        fail(exc)
