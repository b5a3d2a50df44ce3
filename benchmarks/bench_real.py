"""The real-data benchmark (issue 12): every method on the real cases of ../shared/data.

- biv-me patient1: LAX hold-out, each of its 5 LAX views held out in turn (the others guide and align);
- Sunnybrook SC-HF-I-1, -2, -4 (SCD0000101/201/301): slice-drop (every other SAX slice dropped and
  reconstructed), ED and ES, Dice against the manual LV contours of the dropped slices;
- ep_preclinical: slice-drop of its 20 contiguous 5 mm SAX slices (the dropped slices are real acquired
  images), frames 0 and 9 (ED/ES are not given with this data set).

Each case runs through `cardiorecon.evaluate` (the same code as `cardiorecon evaluate`) into OUT/<run>/
(results.csv, report.html); this script then prints and writes OUT/table.md: per case and method the
held-out measure, seconds per frame and the share of labelled heart inside the heart region.

    python benchmarks/bench_real.py --out out/bench-real [--methods linear,register,...] [--data ../shared/data]

Heavy: with `lag` it takes most of an hour on 2 cores. `make bench-real` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cardiorecon.evaluate import PROTOCOLS, Evaluator
from cardiorecon.recon import METHODS
from cardiorecon.report.evaluation import read_csv, write_csv, write_report

RUNS = [  # (run name, protocol, case folders under DATA, frames, factor)
    ("bivme-lax-holdout", "lax-holdout", ["bivme_patient1/dicoms"], "ed-es", 5),
    ("sunnybrook-slice-drop", "slice-drop", ["sunnybrook/SCD0000101", "sunnybrook/SCD0000201",
                                             "sunnybrook/SCD0000301"], "ed-es", 2),
    ("ep_preclinical-slice-drop", "slice-drop", ["ep_preclinical"], "0,9", 2),
]

PROTOCOL_OF = {r[0]: r[1] for r in RUNS}


def _mean(rows, col):
    vals = [float(r[col]) for r in rows if r[col] != "" and np.isfinite(float(r[col]))]
    return (float(np.mean(vals)), len(vals)) if vals else (float("nan"), 0)


def table(results: dict[str, list[dict]], data: dict[str, dict], methods: list[str]) -> str:
    lines = ["| case | protocol | method | n | SSIM | PSNR dB | NCC held-out LAX | Dice LV / Myo | s/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run, rows in results.items():
        for case in dict.fromkeys(r["case"] for r in rows):
            for m in methods:
                img = [r for r in rows if r["case"] == case and r["method"] == m and
                       (r["structure"] == "image" or r["structure"].startswith("lax_"))]
                has_dice = any(r["case"] == case and r["method"] == m and r["structure"] == "lv_cavity" for r in rows)
                if not img and not has_dice:
                    continue
                ssim, n = _mean(img, "ssim")
                psnr, _ = _mean(img, "psnr")
                ncc, _ = _mean(img, "ncc")
                lv, _ = _mean([r for r in rows if r["case"] == case and r["method"] == m and r["structure"] == "lv_cavity"],
                              "dice")
                myo, _ = _mean([r for r in rows if r["case"] == case and r["method"] == m and
                                r["structure"] == "lv_myocardium"], "dice")
                sec, _ = _mean(img, "seconds")
                f = lambda v, d=3: "" if not np.isfinite(v) else f"{v:.{d}f}"  # noqa: E731
                dice = "" if not np.isfinite(lv) else f"{lv:.3f} / {f(myo)}"
                lines.append(f"| {case} | {PROTOCOL_OF[run]} | {m} | {n} | "
                             f"{f(ssim)} | {f(psnr, 2)} | {f(ncc)} | {dice} | {f(sec, 2)} |")
    lines.append("")
    lines.append("| case | heart region (mm, found from) | heart inside the region |")
    lines.append("|---|---|---|")
    for case, d in data.items():
        hr = d.get("heart_region") or {}
        share, seg = hr.get("labelled_share"), hr.get("segmented_share")
        what = f"{100 * share:.1f} % (reference labels)" if share is not None else \
            f"{100 * seg:.1f} % (segmented, frame 0)" if seg is not None else hr.get("segmented_share_note", "")
        lines.append(f"| {case} | {hr.get('size_mm', float('nan')):.0f} ({hr.get('source', '?')}) | {what} |")
    return "\n".join(lines)


def _segmented_share(root: Path, data: dict[str, dict]) -> None:
    """For cases without reference labels: the share of the heart segmented on the whole field of view
    (the shipped whole-field segmenter, frame 0) that lies inside the heart region."""
    from cardiorecon.io import read_study
    from cardiorecon.preprocess import heart_region, region_share
    from cardiorecon.segment import segment_slices
    from cardiorecon.volume import Volume

    folders = {"dicoms": root / "bivme_patient1/dicoms", "ep_preclinical": root / "ep_preclinical"}
    for case, folder in folders.items():
        entry = data.get(case, {}).get("heart_region")
        if entry is None or entry.get("labelled_share") is not None:
            continue
        try:
            study = read_study(folder)
            lab = segment_slices(study.sax.data[..., 0], study.sax.affine)
        except Exception as exc:  # noqa: BLE001 - a benchmark note, not a failure
            entry["segmented_share_note"] = f"segmenter unavailable: {exc}"
            continue
        entry["segmented_share"] = region_share(heart_region(study), Volume(lab, study.sax.affine))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("out/bench-real"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs", default=",".join(r[0] for r in RUNS))
    ap.add_argument("--align", default="auto")
    ap.add_argument("--no-segmentation", action="store_true")
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="OUT folders of earlier runs whose results join the table")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: real data folder not found (the benchmark needs ../shared/data)")
    methods = [m for m in args.methods.split(",") if m]
    if args.runs == "none":
        methods = []
    results, data, t0 = {}, {}, time.time()
    for run, protocol, cases, frames, factor in RUNS:
        if run not in args.runs.split(","):
            continue
        ev = Evaluator(methods, align=args.align).load(segmentation=not args.no_segmentation)
        out = args.out / run
        out.mkdir(parents=True, exist_ok=True)
        ev.on_rows = lambda so_far, out=out: write_csv(so_far, out / "results.csv")  # kept if cut off
        kwargs = {"frames": frames} if protocol == "slice-drop" else {"frames": frames, "factor": factor}
        rows = PROTOCOLS[protocol](ev, [args.data / c for c in cases], **kwargs)
        write_report(rows, ev.figures, methods, out, f"real benchmark: {run}",
                     f"{protocol} on {', '.join(cases)}; methods {', '.join(methods)}", failures=ev.failures)
        results[run] = rows
        data.update(ev.data)
        for f in ev.failures:
            print(f"FAILED {run} {f['case']}: {f['error']}")
        print(f"{run}: done at {time.time() - t0:.0f} s")
    for extra in args.merge:  # results of other runs of this script (e.g. lag alone), same layout
        for run, *_ in RUNS:
            if (extra / run / "results.csv").is_file():
                results.setdefault(run, [])
                results[run] += read_csv([extra / run / "results.csv"])
        if (extra / "cases.json").is_file():
            for case, d in json.loads((extra / "cases.json").read_text()).items():
                data.setdefault(case, d)
        methods += [m for r in results.values() for m in dict.fromkeys(x["method"] for x in r) if m not in methods]
    if args.runs != "none":
        _segmented_share(args.data, data)
    text = table(results, data, list(dict.fromkeys(methods + ["truth-image"])))  # truth-image: the segmenter on the acquired slices
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "cases.json").write_text(json.dumps(data, indent=1, default=str))
    print(text)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
