"""Issue 26: `selfsr` against linear, register and fusion on real slice-drop, and its ablations.

Slice-drop (evaluate.drop_slices: every other SAX slice removed, factor 2, the dropped slices scored
with SSIM / PSNR on the working grid in [-1, 1], as `slice_drop_protocol` and bench_per_subject do):
- ep_preclinical (20 contiguous 5 mm slices; frames 0 and 9 as in bench_real), LAX: its 14 parallel
  long-axis slices;
- Sunnybrook SCD0000101/201/301, ED and ES (no LAX);
- biv-me patient1 (`--cases bv`; DICOM, ED and ES), LAX: its long-axis views;
- the ACDC hold-out (`training.acdc.ACDC_HOLDOUT`, read by `io.acdc_h5.read_acdc_h5_study`: HDF5
  without geometry, so `nominal_affine`'s 1.5 mm pixels and 10 mm slice step, and slice thickness 8 mm
  nominal; frame01 = ED, frame02 = ES; no LAX).

Every variant is a method of the table by name (`recon.get_method`), with its options changed through
`ReconConfig.method_options` (selfsr's `SelfSRConfig`).

Rows are appended to OUT/rows.jsonl as they come (a rerun skips the (case, variant) pairs done), the
summary (per case, mean with 95 % t-intervals over cases, paired differences against `--ref`, default
register) to OUT/summary.md, and the per-(case, variant) means over frames to OUT/results.json.
`--ed-only` scores the first frame of each case only (ED: ep frame 0, ACDC frame01, the study's ED frame).

Ablations (issue 26; variants of VARIANTS): `selfsr-no-lax` (no LAX training pairs), `selfsr-Nsteps`
(training budget), `selfsr-on-linear` (the residual on linear instead of register), `selfsr-per-frame`
(one network per frame instead of one shared by ED and ES). With `--init WEIGHTS` (pre-trained on other
subjects, `benchmarks/pretrain_selfsr.py`): `selfsr-pre` (fine-tuned the default 300 steps on the subject)
and `selfsr-pre-0steps` (the pre-trained network alone, no per-subject step).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_selfsr.py --out /tmp/selfsr26/main \\
        --variants linear,register,fusion,selfsr [--cases ep,sb,acdc,bv] [--only CASE,...] [--ed-only] \\
        [--ref register] [--summary-only] [--init WEIGHTS]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from cardiorecon.evaluate import drop_slices
from cardiorecon.geometry import resample
from cardiorecon.io.acdc_h5 import read_acdc_h5_study
from cardiorecon.metrics.image import psnr, ssim
from cardiorecon.recon import ReconConfig, get_method, reconstruct
from cardiorecon.training.acdc import ACDC_HOLDOUT
from cardiorecon.volume import Study, Volume

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ACDC_THICKNESS_MM = 8.0  # nominal, as the 1.5 mm pixels and 10 mm step of io.acdc_h5.nominal_affine

# variant name -> (method, overrides of its options)
VARIANTS = {
    "linear": ("linear", {}), "register": ("register", {}), "fusion": ("fusion", {}),
    "selfsr": ("selfsr", {}),
    "selfsr-on-linear": ("selfsr", {"base": "linear"}),
    "selfsr-no-lax": ("selfsr", {"use_lax": False}),
    "selfsr-per-frame": ("selfsr", {"per_frame": True}),
    **{f"selfsr-{n}steps": ("selfsr", {"steps": n}) for n in (0, 50, 100, 150, 300, 600, 1200)},
    **{f"selfsr-on-linear-{n}steps": ("selfsr", {"base": "linear", "steps": n}) for n in (100, 600)},
    # other training seeds (the network's init and batches): the noise an ablation's difference must exceed
    **{f"{v}-seed{k}": ("selfsr", {**o, "seed": k}) for v, o in (("selfsr", {}), ("selfsr-no-lax", {"use_lax": False}),
                                                                ("selfsr-on-linear", {"base": "linear"}))
       for k in (1, 2)},
}


def acdc_study(patient: int, data: Path = DATA) -> Study:
    """An ACDC hold-out patient (ED = frame 0, ES = frame 1) on the nominal geometry, slices 8 mm thick."""
    study = read_acdc_h5_study(data / "acdc", patient)
    sax = Volume(study.sax.data, study.sax.affine, {**study.sax.meta, "slice_thickness_mm": ACDC_THICKNESS_MM})
    return dataclasses.replace(study, sax=sax)


def cases(which: list[str], data: Path = DATA):
    from cardiorecon.io import read_study

    if "ep" in which:
        yield "ep_preclinical", lambda: read_study(data / "ep_preclinical"), [0, 9]
    if "sb" in which:
        for s in ("SCD0000101", "SCD0000201", "SCD0000301"):
            yield s, (lambda s=s: read_study(data / "sunnybrook" / s)), None
    if "bv" in which:
        yield "bivme_patient1", lambda: read_study(data / "bivme_patient1" / "dicoms"), None
    if "acdc" in which:
        for p in ACDC_HOLDOUT:
            yield f"acdc{p:03d}", (lambda p=p: acdc_study(p, data)), [0, 1]


def score(study: Study, sub: Study, variant: str, frames: list[int]) -> list[dict]:
    method, over = VARIANTS[variant]
    cfg = ReconConfig(method_options={method: dataclasses.replace(get_method(method).Options(), **over)} if over else {})
    rec = reconstruct(sub, method, factor=2, frames=frames, config=cfg, align="off", progress=False)
    return dropped_slice_rows(study, rec, variant, frames)


def dropped_slice_rows(study: Study, rec, variant: str, frames: list[int]) -> list[dict]:
    """SSIM / PSNR of a factor-2 reconstruction `rec` of `study` with every other slice dropped, on
    the dropped slices (working grid, [-1, 1]), one row per frame."""
    aff, shape = rec.normalised.affine, rec.normalised.spatial_shape
    dropped = list(range(1, shape[2], 2))
    rows = []
    for i, t in enumerate(frames):
        ref = rec.grid.intensity.forward(resample(study.sax.frame(t), aff, shape, order=1).data)
        d = rec.normalised.data[..., i]
        rows.append({"variant": variant, "frame": int(t), "ssim": ssim(d[:, :, dropped], ref[:, :, dropped], 2.0),
                     "psnr": psnr(d[:, :, dropped], ref[:, :, dropped], 2.0), "seconds": rec.seconds_per_frame[i],
                     "peak_mb": rec.peak_memory_mb, "grid": list(map(int, shape)), "notes": rec.notes})
    return rows


def t_interval(x: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    x = np.asarray(x, float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - h, m + h


def per_case(rows: list[dict]) -> dict:
    """(case, variant) -> [ssim, psnr, seconds] mean over the frames scored."""
    per = {}
    for r in rows:
        per.setdefault((r["case"], r["variant"]), []).append((r["ssim"], r["psnr"], r["seconds"]))
    return {k: np.mean(v, axis=0) for k, v in per.items()}


def summary(rows: list[dict], variants: list[str], ref: str = "register") -> str:
    per = per_case(rows)  # (case, variant) -> (ssim, psnr, seconds) mean over frames
    variants = [v for v in variants if any(k[1] == v for k in per)]
    case_list = list(dict.fromkeys(r["case"] for r in rows))
    complete = [c for c in case_list if all((c, v) in per for v in variants)]
    lines = ["| case | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for c in case_list:
        cells = [f"{per[c, v][0]:.3f} / {per[c, v][1]:.2f}" if (c, v) in per else "" for v in variants]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean over the {len(complete)} cases with every variant (95 % t-interval over cases); "
                  "SSIM, PSNR dB, s/frame:", "",
              f"| variant | SSIM | PSNR dB | s/frame | SSIM - {ref} | PSNR - {ref} | worst case SSIM - {ref} |",
              "|---|---|---|---|---|---|---|"]
    for v in variants:
        s = np.array([per[c, v][0] for c in complete])
        p = np.array([per[c, v][1] for c in complete])
        sec = np.array([per[c, v][2] for c in complete])
        ms, ls, hs = t_interval(s)
        mp, lp, hp = t_interval(p)
        cells = [f"{ms:.3f} [{ls:.3f}, {hs:.3f}]", f"{mp:.2f} [{lp:.2f}, {hp:.2f}]", f"{sec.mean():.1f}"]
        if ref in variants:
            ds = s - np.array([per[c, ref][0] for c in complete])
            dp = p - np.array([per[c, ref][1] for c in complete])
            a, b, c_ = t_interval(ds)
            d, e, f_ = t_interval(dp)
            worst = complete[int(np.argmin(ds))]
            cells += [f"{a:+.3f} [{b:+.3f}, {c_:+.3f}]", f"{d:+.2f} [{e:+.2f}, {f_:+.2f}]",
                      f"{ds.min():+.3f} ({worst})"]
        else:
            cells += ["", "", ""]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_cases(out: Path, which: str, variants: list[str], score_fn, only: str = "", ed_only: bool = False,
              summary_only: bool = False) -> list[dict]:
    """Score every (case, variant) not yet in OUT/rows.jsonl with `score_fn(study, dropped, variant,
    frames)`, appending rows as they come; returns every row."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "rows.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    done = {(r["case"], r["variant"]) for r in rows}
    if summary_only:  # the rows already scored, of the --only cases where given
        return [r for r in rows if not only or r["case"] in only.split(",")]
    for name, load, frames in cases(which.split(",")):
        if only and name not in only.split(","):
            continue
        todo = [v for v in variants if (name, v) not in done]
        if not todo:
            continue
        study = load()
        sub = drop_slices(study, 2)
        fr = frames or [t for t in (study.ed_frame, study.es_frame) if t is not None] or [0]
        fr = fr[:1] if ed_only else fr
        for v in todo:
            t0 = time.perf_counter()
            new = [{"case": name, **r} for r in score_fn(study, sub, v, fr)]
            with log.open("a") as fh:
                for r in new:
                    fh.write(json.dumps(r, default=float) + "\n")
            rows += new
            print(f"{name:16s} {v:22s} " + "  ".join(f"f{r['frame']} {r['ssim']:.3f}/{r['psnr']:.2f}" for r in new)
                  + f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default="linear,register,fusion,selfsr")
    ap.add_argument("--cases", default="ep,sb,acdc")
    ap.add_argument("--only", default="", help="comma-separated case names to run (default all of --cases)")
    ap.add_argument("--ed-only", action="store_true", help="score the first (ED) frame of each case only")
    ap.add_argument("--ref", default="register", help="the variant the paired differences are taken against")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--init", type=Path, default=None, help="pre-trained selfsr weights for the selfsr-pre variants")
    args = ap.parse_args()
    if args.init is not None:
        VARIANTS["selfsr-pre"] = ("selfsr", {"init": str(args.init)})
        VARIANTS["selfsr-pre-0steps"] = ("selfsr", {"init": str(args.init), "steps": 0})
    torch.set_num_threads(1)
    variants = [v for v in args.variants.split(",") if v]
    rows = run_cases(args.out, args.cases, variants, score, args.only, args.ed_only, args.summary_only)
    text = summary(rows, variants, args.ref)
    (args.out / "summary.md").write_text(text + "\n")
    frames = {}
    for r in rows:
        frames.setdefault((r["case"], r["variant"]), []).append(r["frame"])
    results = [{"case": c, "variant": v, "method": VARIANTS[v][0], "options": VARIANTS[v][1], "frames": frames[c, v],
                "ssim": float(m[0]), "psnr": float(m[1]), "seconds_per_frame": float(m[2])}
               for (c, v), m in per_case(rows).items() if v in VARIANTS]
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
