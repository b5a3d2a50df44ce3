"""Quality control (issue 27) on labelled cases: how many bad cases it flags and how many good ones it
flags wrongly, and how the predicted-quality score correlates with the real Dice.

A case is bad when its mean Dice (over the structures its reference has) is below 0.7 or a cavity volume
is more than 20 % off. QC never reads the reference labels: they only score here.

Parts (each its own run, `--part`):

- `acdc`: the project's ACDC hold-out (20 patients never trained on), ED and ES, the shipped segmenter on
  the acquired slices. No geometry survives ACDC's preprocessing: an affine of 1.5 x 1.5 x 10 mm is
  assumed, volumes are compared in voxels (unitless), the mL ranges are not applied. Rules used: LV / RV
  missing, LV cavity enclosure, ES above ED (voxel counts), predicted quality.
- `sunnybrook`: SC-HF-I-1/2/4 at their contoured ED and ES frames (LV cavity and myocardium; scored on the
  contoured slices), every rule that needs no LAX. Note: the shipped segmenter saw SCD0000101 and 0201 in
  training (SCD0000301 was held out).
- `phantoms`: phantoms through `cohort.run_subject` (linear), good and with injected failures: a wrong crop
  (the SAX field of view cut through the heart), a stack flipped (slices in reverse order, geometry kept),
  a missing RV (its blood pool painted as myocardium in the image). Scored against the dense truth at ED
  and ES and the true volumes.
- `unlabelled`: biv-me patient1 through `cohort.run_subject` (QC status only; no label map).
- `pages`: size and time to first draw of pages (`--page PATH`, repeatable) in headless Chromium.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_qc.py --part acdc --out out/bench-qc
    ... --part sunnybrook / phantoms / unlabelled; then --part summary

Rerun with another segmenter: --seg-weights PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOLDOUT = ["008", "009", "018", "019", "029", "034", "038", "039", "049", "054", "056", "059", "065", "068", "069",
           "076", "086", "089", "094", "098"]
ACDC_TO_PROJECT = np.array([0, 3, 2, 1], np.uint8)  # ACDC 1 RV, 2 Myo, 3 LV -> 1 LV, 2 Myo, 3 RV


def dice_scores(pred: np.ndarray, ref: np.ndarray, classes=(1, 2, 3)) -> dict[int, float]:
    from cardiorecon.qc import dice

    return {c: dice(pred == c, ref == c) for c in classes if (ref == c).any()}


def vol_error(pred: np.ndarray, ref: np.ndarray, c: int) -> float:
    r = float((ref == c).sum())
    return float("nan") if r == 0 else 100.0 * (float((pred == c).sum()) - r) / r


def is_bad(mean_dice: float, vol_errors: list[float]) -> bool:
    errs = [abs(e) for e in vol_errors if np.isfinite(e)]
    return (not np.isfinite(mean_dice)) or mean_dice < 0.7 or (bool(errs) and max(errs) > 20.0)


def acdc_volume(pid: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    root = DATA / "acdc"
    whole = root / f"patient{pid}_frame{frame:02d}.h5"
    if whole.is_file():
        with h5py.File(whole) as f:
            img, lab = np.asarray(f["image"]), np.asarray(f["label"])
    else:
        parts = sorted(root.glob(f"patient{pid}_frame{frame:02d}_slice_*.h5"), key=lambda p: int(p.stem.split("_")[-1]))
        img, lab = [], []
        for p in parts:
            with h5py.File(p) as f:
                img.append(np.asarray(f["image"]))
                lab.append(np.asarray(f["label"]))
        img, lab = np.stack(img), np.stack(lab)
    # (slices, rows, cols) -> (X, Y, Z) = (rows, cols, slices)
    return np.transpose(img, (1, 2, 0)).astype(np.float32), ACDC_TO_PROJECT[np.transpose(lab, (1, 2, 0))]


def frame_qc(seg, image: np.ndarray, labels: np.ndarray) -> tuple[list, float]:
    """Rules that need only the frame: structures and predicted quality."""
    from cardiorecon import qc

    flags, _ = qc.check_structures(labels)
    score = qc.perturbation_agreement(seg, image, labels)["score"]
    return flags + qc.check_score(score), score


def _partial(out: Path, name: str, rows: list[dict]) -> None:
    """Rows so far (a long part can be stopped and still reports what it did)."""
    import dataclasses

    from cardiorecon.qc import Flag

    def clean(r):
        r = {k: v for k, v in r.items() if k != "dice_per_class"}
        if "flags" in r:
            r["flags"] = [dataclasses.asdict(f) if isinstance(f, Flag) else f for f in r["flags"]]
        return r

    (out / f"{name}.partial.json").write_text(json.dumps([clean(r) for r in rows], indent=1, default=float))


def part_acdc(net, out: Path) -> list[dict]:
    from cardiorecon import qc
    from cardiorecon.segment import segment_slices

    from cardiorecon.io.acdc_h5 import nominal_affine

    # the HDF5 slices' stand-in geometry with the canonical chirality (a plain diagonal affine made the
    # segmenter see every ACDC heart mirrored: the first QC measurement, issue 27, was taken that way)
    affine = nominal_affine()
    rows = []
    for pid in HOLDOUT:
        t0 = time.perf_counter()
        per = {}
        for frame, phase in ((1, "ED"), (2, "ES")):
            img, ref = acdc_volume(pid, frame)
            image = img * 2 - 1  # [0, 1] -> [-1, 1]
            pred = segment_slices(image, affine, net)
            seg = (lambda im: segment_slices(im, affine, net))
            flags, score = frame_qc(seg, image, pred)
            d = dice_scores(pred, ref)
            errs = [vol_error(pred, ref, c) for c in (1, 3)]
            per[phase] = (pred, ref)
            rows.append({"set": "acdc", "case": f"patient{pid}", "phase": phase, "dice": float(np.mean(list(d.values()))),
                         "dice_per_class": d, "vol_err_pct": errs, "score": score, "flags": flags,
                         "bad": is_bad(float(np.mean(list(d.values()))), errs)})
        # ES above ED, in voxels (the spacing cancels)
        (ped, _), (pes, _) = per["ED"], per["ES"]
        fn = {}
        for c, v in ((1, "lv"), (3, "rv")):
            fn[f"{v}_edv_ml"], fn[f"{v}_esv_ml"] = float((ped == c).sum()), float((pes == c).sum())
        es_flags = [f for f in qc.check_function(fn, ranges={}) if f.rule == "es_above_ed"]
        for r in rows[-2:]:
            r["flags"] = r["flags"] + es_flags
        print(f"patient{pid}: dice ED {rows[-2]['dice']:.3f} ES {rows[-1]['dice']:.3f}, score {rows[-2]['score']:.3f} "
              f"{rows[-1]['score']:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
        _partial(out, "acdc", rows)
    return rows


def part_sunnybrook(net, out: Path) -> list[dict]:
    from cardiorecon import qc
    from cardiorecon.io import read_study
    from cardiorecon.metrics.seg import volume_ml
    from cardiorecon.segment import normalise_images, segment_slices

    rows = []
    for name in ("SCD0000101", "SCD0000201", "SCD0000301"):
        study = read_study(DATA / "sunnybrook" / name)
        flags_motion, ratio = qc.check_motion(study.sax)
        affine = study.sax.affine
        spacing = study.sax.spacing.tolist()
        per = {}
        for t, phase in ((study.ed_frame, "ED"), (study.es_frame, "ES")):
            image = normalise_images(np.asarray(study.sax.data[..., t], np.float32))
            pred = segment_slices(image, affine, net)
            ref = np.asarray(study.sax_labels.data[..., t])
            scored = ref.any(axis=(0, 1))  # contoured slices only
            flags, score = frame_qc(lambda im: segment_slices(im, affine, net), image, pred)
            p, r = pred[:, :, scored], ref[:, :, scored]
            d = dice_scores(p, r, (1, 2))
            errs = [vol_error(p, r, 1)]
            per[phase] = pred
            rows.append({"set": "sunnybrook", "case": name, "phase": phase, "dice": float(np.mean(list(d.values()))),
                         "dice_per_class": d, "vol_err_pct": errs, "score": score, "flags": flags + flags_motion,
                         "bad": is_bad(float(np.mean(list(d.values()))), errs), "motion_ratio": ratio})
        fn = {"lv_mass_g": 1.05 * volume_ml(per["ED"], 2, spacing)}
        for c, v in ((1, "lv"), (3, "rv")):
            edv, esv = volume_ml(per["ED"], c, spacing), volume_ml(per["ES"], c, spacing)
            fn.update({f"{v}_edv_ml": edv, f"{v}_esv_ml": esv, f"{v}_sv_ml": edv - esv,
                       f"{v}_ef": 100 * (edv - esv) / edv if edv > 0 else float("nan")})
        ff = qc.check_function(fn)
        for r in rows[-2:]:
            r["flags"] = r["flags"] + ff
            r["function"] = fn
        print(f"{name}: dice ED {rows[-2]['dice']:.3f} ES {rows[-1]['dice']:.3f}; "
              f"{qc.QCReport(rows[-1]['flags']).reasons()}", flush=True)
        _partial(out, "sunnybrook", rows)
    return rows


def _inject(src: Path, dst: Path, kind: str) -> None:
    import nibabel as nib

    shutil.copytree(src, dst)
    img = nib.load(dst / "sa.nii.gz")
    data = np.asarray(img.dataobj).astype(np.float32)
    affine = img.affine.copy()
    if kind == "flipped":
        data = data[:, :, ::-1].copy()
    elif kind == "wrong_crop":
        lab = np.asarray(nib.load(dst / "label_sa.nii.gz").dataobj)
        heart = np.argwhere(lab[..., 0] > 0) if lab.ndim == 4 else np.argwhere(lab > 0)
        cx = int(np.median(heart[:, 0]))
        data = data[: cx + 4].copy()  # the field of view ends a few mm past the LV centre
    elif kind == "missing_rv":
        lab = np.asarray(nib.load(dst / "label_sa.nii.gz").dataobj)
        for t in range(data.shape[3]):
            lt = lab[..., t] if lab.ndim == 4 else lab
            d = data[..., t]
            d[lt == 3] = float(np.mean(d[lt == 2]))
    nib.save(nib.Nifti1Image(data, affine), dst / "sa.nii.gz")


def part_phantoms(opts_kw: dict, out: Path, n: int = 3) -> list[dict]:
    import nibabel as nib

    from cardiorecon.cohort import CohortOptions, run_subject
    from cardiorecon.geometry import resample
    from cardiorecon.io.nifti import read_nifti
    from cardiorecon.phantom import generate_cohort

    data = out / "phantom_data"
    if not data.is_dir():
        generate_cohort(data, n, "healthy", seed=60, num_frames=8, progress=False, truth=True)
    rows = []
    for subject in sorted(p for p in data.iterdir() if p.is_dir() and "_" in p.name and not p.name.endswith(
            ("flipped", "wrong_crop", "missing_rv"))):
        truth = json.loads((subject / "subject.json").read_text())
        for kind in ("good", "wrong_crop", "flipped", "missing_rv"):
            src = subject
            if kind != "good":
                src = data / f"{subject.name}_{kind}"
                if not src.is_dir():
                    _inject(subject, src, kind)
            t0 = time.perf_counter()
            res = run_subject(src, out / "phantom_runs" / src.name, CohortOptions(method="linear", meshes=False,
                                                                                   **opts_kw))
            folder = out / "phantom_runs" / src.name
            result = json.loads((folder / "result.json").read_text())
            seg = read_nifti(folder / "seg_linear.nii.gz")
            tl = read_nifti(subject / "truth_label_sa.nii.gz")
            ds = []
            for phase in ("ed", "es"):
                t = int(truth[f"{phase}_frame"])
                ref = resample(tl.frame(t), seg.affine, seg.spatial_shape, order=0).data
                ds.append(float(np.mean(list(dice_scores(np.asarray(seg.data[..., t]), ref).values()))))
            r = res.row
            errs = [100 * (r[k] - truth[k]) / truth[k] for k in ("lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rv_esv_ml")]
            d = float(np.mean(ds))
            rows.append({"set": "phantom", "case": src.name, "phase": "ED+ES", "kind": kind, "dice": d,
                         "vol_err_pct": errs, "score": result["qc"]["score"], "qc": result["qc"]["status"],
                         "reasons": result["qc"]["reasons"], "bad": is_bad(d, errs),
                         "lax_ncc": result["qc"]["measures"].get("lax_ncc"),
                         "motion_ratio": result["qc"]["measures"].get("motion_ratio")})
            print(f"{src.name}: dice {d:.3f}, vol err {np.round(errs, 1)}, qc {rows[-1]['qc']} "
                  f"{rows[-1]['reasons']}, {time.perf_counter() - t0:.0f} s", flush=True)
            _partial(out, "phantoms", rows)
    return rows


def part_unlabelled(opts_kw: dict, out: Path) -> list[dict]:
    from cardiorecon.cohort import CohortOptions, run_subject

    rows = []
    for name, path in (("bivme_patient1", DATA / "bivme_patient1" / "dicoms"),):
        t0 = time.perf_counter()
        res = run_subject(path, out / "unlabelled" / name, CohortOptions(method="linear", meshes=False, **opts_kw))
        result = json.loads((out / "unlabelled" / name / "result.json").read_text())
        rows.append({"set": "unlabelled", "case": name, "qc": result["qc"]["status"], "reasons": result["qc"]["reasons"],
                     "score": result["qc"]["score"], "lax_ncc": result["qc"]["measures"].get("lax_ncc"),
                     "motion_ratio": result["qc"]["measures"].get("motion_ratio"),
                     "numbers": {k: res.row[k] for k in ("lv_edv_ml", "lv_ef", "rv_edv_ml", "rv_ef", "lv_mass_g")}})
        print(f"{name}: qc {rows[-1]['qc']} {rows[-1]['reasons']} score {rows[-1]['score']:.3f} "
              f"lax {rows[-1]['lax_ncc']}, {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def part_pages(pages: list[Path], out: Path, repeats: int = 3) -> list[dict]:
    """Size of each page and time to first draw in headless Chromium (tests/browser.py): the viewer's own
    measure (script start to the first drawn frame, `data-first-draw-ms`) and the wall time of the whole
    browser run (start, load, draw, exit)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import attr, open_page

    rows = []
    for page in pages:
        draws, walls = [], []
        for _ in range(repeats):
            res = open_page(page)
            draws.append(float(attr(res["dom"], "data-first-draw-ms") or "nan"))
            walls.append(res["seconds"])
        rows.append({"page": str(page), "mb": page.stat().st_size / 1e6, "state": attr(res["dom"], "data-state"),
                     "first_draw_ms": draws, "browser_wall_s": walls, "requests": res["requests"]})
        print(f"{page}: {rows[-1]['mb']:.1f} MB, {rows[-1]['state']}, first draw {np.median(draws):.0f} ms "
              f"(median of {repeats}), browser run {np.median(walls):.1f} s, requests {res['requests']}", flush=True)
    return rows


def summary(out: Path) -> None:
    from scipy.stats import pearsonr, spearmanr

    from cardiorecon.qc import QCReport

    rows = []
    for part in ("acdc", "sunnybrook", "phantoms"):
        p = out / f"{part}.json"
        p = p if p.is_file() else out / f"{part}.partial.json"
        if p.is_file():
            rows += json.loads(p.read_text())
    lines = ["| set | cases | bad | bad flagged | good | good flagged (false alarms) | score vs Dice: Pearson r, Spearman rho |",
             "|---|---|---|---|---|---|---|"]
    for s in ("acdc", "sunnybrook", "phantom", "all"):
        rs = [r for r in rows if s == "all" or r["set"] == s]
        if not rs:
            continue
        flagged = [(r.get("qc") or QCReport([_flag(f) for f in r["flags"]]).status) != "ok" for r in rs]
        bad = [r["bad"] for r in rs]
        sc = np.array([r["score"] for r in rs], float)
        dc = np.array([r["dice"] for r in rs], float)
        ok = np.isfinite(sc) & np.isfinite(dc)
        pr = pearsonr(sc[ok], dc[ok])[0] if ok.sum() > 2 else float("nan")
        sr = spearmanr(sc[ok], dc[ok])[0] if ok.sum() > 2 else float("nan")
        nb = sum(bad)
        lines.append(f"| {s} | {len(rs)} | {nb} | {sum(f and b for f, b in zip(flagged, bad))} of {nb} | "
                     f"{len(rs) - nb} | {sum(f and not b for f, b in zip(flagged, bad))} of {len(rs) - nb} | "
                     f"{pr:.2f}, {sr:.2f} (n = {int(ok.sum())}) |")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text)


def _flag(d):
    from cardiorecon.qc import Flag

    return d if isinstance(d, Flag) else Flag(**d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", required=True, choices=["acdc", "sunnybrook", "phantoms", "unlabelled", "pages", "summary"])
    ap.add_argument("--page", type=Path, action="append", default=[], help="pages: an HTML page to time (repeat)")
    ap.add_argument("--out", type=Path, default=Path("out/bench-qc"))
    ap.add_argument("--seg-weights", default=None, help="segmentation weights (default: the shipped window network)")
    ap.add_argument("--phantoms", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from cardiorecon.qc import Flag
    from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet

    if args.part == "summary":
        summary(args.out)
        return
    t0 = time.perf_counter()
    if args.part in ("acdc", "sunnybrook"):
        net = load_segnet(args.seg_weights or DEFAULT_WINDOW_SEGNET).eval()
        rows = (part_acdc if args.part == "acdc" else part_sunnybrook)(net, args.out)
    elif args.part == "pages":
        rows = part_pages(args.page, args.out)
    elif args.part == "phantoms":
        rows = part_phantoms({"torch_threads": 1, "seg_weights": args.seg_weights}, args.out, args.phantoms)
    else:
        rows = part_unlabelled({"torch_threads": 1, "seg_weights": args.seg_weights}, args.out)
    for r in rows:
        r.pop("dice_per_class", None)
        if "flags" in r:
            r["qc"] = __import__("cardiorecon.qc", fromlist=["QCReport"]).QCReport(r["flags"]).status
            r["reasons"] = __import__("cardiorecon.qc", fromlist=["QCReport"]).QCReport(r["flags"]).reasons()
            r["flags"] = [dataclasses.asdict(f) if isinstance(f, Flag) else f for f in r["flags"]]
    (args.out / f"{args.part}.json").write_text(json.dumps(rows, indent=1, default=float))
    print(f"{args.part}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {args.out / (args.part + '.json')}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
