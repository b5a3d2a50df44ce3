"""Cohort benchmark (issue 17): throughput, memory, volume curves against the phantom's truth, meshes.

Run under the shared lock (it keeps the 2 cores busy for about half an hour):

    flock /tmp/cardiorecon-heavy.lock .venv/bin/python benchmarks/bench_cohort.py --out /tmp/bench_cohort

1. Throughput: `run_cohort` (a LocalCluster of 1 or 2 workers, torch threads = 2 / workers) over small
   phantom subjects, per method; subjects per hour = subjects done / wall time (cluster start-up
   included). The slow methods run on few frames per subject; their figure for a whole 25-frame cine
   is extrapolated from the measured seconds per frame and per-subject overhead, and marked as such.
2. Peak memory per worker: the largest resident set of a worker process during a subject (`peak_mb`).
3. Volume curves: the phantom's true LV/RV volume curve (its dense truth labels, per frame) against
   the curve of the reconstruction segmented frame by frame (`none`) and 4D-consistently (class
   probabilities or images smoothed along the cycle): RMS (mL), the curves' second-difference RMS
   (mL), and the EF error. Reference labels are read here only, for scoring.
4. Meshes: every mesh written in 1: watertight, and enclosed volume against the voxel volume.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def phantoms(root: Path, name: str, n: int, frames: int, seed: int, truth: bool, cohort: str = "healthy") -> Path:
    from cardiorecon.phantom import generate_cohort

    folder = root / name
    if not folder.is_dir() or len(list(folder.iterdir())) < n:
        generate_cohort(folder, n, cohort, seed, frames, progress=False, truth=truth)  # type: ignore[arg-type]
    return folder


def throughput(data: list[Path], out: Path, method: str, frames: str, workers: int, full_frames: int,
               threads: int | None = None, lag_warm: str = "off") -> dict:
    from cardiorecon.cohort import CohortOptions, run_cohort
    from cardiorecon.recon import get_method

    options = CohortOptions(method=method, frames=frames, torch_threads=threads or max(1, 2 // workers),
                            lag_warm=lag_warm if get_method(method).takes("warm") else "off")
    t0 = time.perf_counter()
    run = run_cohort(data, out, options, workers=workers, progress=False, echo=lambda s: None)
    wall = time.perf_counter() - t0
    done = [r for r in run.rows if r["status"] == "done"]
    if not done:
        raise SystemExit(f"{method} x{workers}: no subject done: {[r['error'] for r in run.rows]}")
    nframes = np.mean([r["frames"] for r in done])
    spf = float(np.mean([r["seconds_per_frame"] for r in done]))
    per_subject = float(np.mean([r["seconds"] for r in done]))
    overhead = per_subject - nframes * spf
    # parallel efficiency of this run: subject-seconds of work per second of wall time
    busy = sum(r["seconds"] for r in done) / wall
    row = {"method": method, "workers": workers, "subjects": len(done), "failed": run.failed, "frames": nframes,
           "wall_s": wall, "subjects_per_hour": 3600 * len(done) / wall, "seconds_per_subject": per_subject,
           "recon_seconds_per_frame": spf, "overhead_s": overhead,
           "peak_mb_per_worker": float(max(r["peak_mb"] for r in done)), "busy_workers": busy,
           "torch_threads": options.torch_threads, "lag_warm": options.lag_warm if get_method(method).takes("warm") else ""}
    if nframes < full_frames:
        projected = overhead + full_frames * spf
        row.update({"extrapolated_to_frames": full_frames, "projected_seconds_per_subject": projected,
                    "projected_subjects_per_hour": 3600 * busy / projected})
    return row


def curves(folders: list[Path], methods: list[str], sigmas: list[float]) -> list[dict]:
    """Per-frame against 4D-consistent segmentation of the same reconstruction, against the truth."""
    from cardiorecon.autoencoder import volume_to_slices
    from cardiorecon.cohort import CohortOptions, class_probabilities, labels_over_time, load_models, segment_4d
    from cardiorecon.io import read_study
    from cardiorecon.metrics.function import curve_rms, function_from_curves, second_difference_rms, volume_curves
    from cardiorecon.recon.pipeline import reconstruct

    rows = []
    for method in methods:
        models = load_models(CohortOptions(method=method))
        for folder in folders:
            study = read_study(folder)
            t0 = time.perf_counter()
            rec = reconstruct(study, method, factor=5, frames="all", model=models.recon, align="off")
            recon_s = time.perf_counter() - t0
            truth = read_study(folder / "truth_label_sa.nii.gz").sax  # scoring only
            true = volume_curves(truth.data.astype(np.uint8), truth.spacing.tolist())
            true_fn = function_from_curves(true)
            spacing = rec.volume.spacing.tolist()
            X, Y, Z, T = rec.normalised.shape
            probs = class_probabilities(models.segnet, volume_to_slices(rec.normalised.data)).numpy()
            probs = probs.reshape(T, Z, -1, X, Y)  # segmented once; the probability variants reuse it
            variants = [("none", 0.0)] + [("probability", s) for s in sigmas] + [("intensity", 0.75)]
            for temporal, sigma in variants:
                if temporal == "intensity":
                    labels = segment_4d(models.segnet, rec.normalised.data, temporal, sigma, circular=True)
                else:
                    labels = labels_over_time(probs, sigma, circular=True)
                c = volume_curves(labels, spacing)
                fn = function_from_curves(c, labels, spacing)
                rows.append({"subject": folder.name, "method": method, "temporal": temporal, "sigma": sigma,
                             "frames": study.num_frames, "recon_s": recon_s,
                             "lv_rms_ml": curve_rms(c["lv_ml"], true["lv_ml"]),
                             "rv_rms_ml": curve_rms(c["rv_ml"], true["rv_ml"]),
                             "lv_d2_ml": second_difference_rms(c["lv_ml"]), "lv_d2_true_ml": second_difference_rms(true["lv_ml"]),
                             "rv_d2_ml": second_difference_rms(c["rv_ml"]), "rv_d2_true_ml": second_difference_rms(true["rv_ml"]),
                             "lv_ef": fn["lv_ef"], "lv_ef_true": true_fn["lv_ef"],
                             "lv_ef_error": fn["lv_ef"] - true_fn["lv_ef"],
                             "rv_ef_error": fn["rv_ef"] - true_fn["rv_ef"]})
    return rows


def lag_cine(folder: Path, variants: list[str], iterations: int | None, threads: int):
    """`lag` over one phantom cine, every frame, per frame (`off`) against warm-started from the previous
    frame (`previous`, `delta`): per-frame seconds, loss, LAX NCC, SSIM of the new slices against the
    dense truth image, and the volume curves (segmented frame by frame) against the true curve. The
    truth is read here only, for scoring."""
    import dataclasses

    import torch

    from cardiorecon.autoencoder import volume_to_slices
    from cardiorecon.cohort import CohortOptions, class_probabilities, labels_over_time, load_models
    from cardiorecon.geometry import resample
    from cardiorecon.io import read_study
    from cardiorecon.metrics.function import curve_rms, function_from_curves, second_difference_rms, volume_curves
    from cardiorecon.metrics.image import ssim
    from cardiorecon.recon.pipeline import ReconConfig, reconstruct

    torch.set_num_threads(threads)
    study = read_study(folder)
    truth_img = read_study(folder / "truth_sa.nii.gz").sax  # scoring only
    truth = read_study(folder / "truth_label_sa.nii.gz").sax  # scoring only
    true = volume_curves(truth.data.astype(np.uint8), truth.spacing.tolist())
    true_fn = function_from_curves(true)
    rows = []
    for variant in variants:
        method = "linear" if variant == "linear" else "lag"
        models = load_models(CohortOptions(method=method))
        config = ReconConfig() if method == "linear" else dataclasses.replace(
            ReconConfig(), lag_warm=variant, lag_warm_iterations=iterations)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        rec = reconstruct(study, method, factor=5, frames="all", model=models.recon, config=config, align="off")
        recon_s = time.perf_counter() - t0
        X, Y, Z, T = rec.normalised.shape
        probs = class_probabilities(models.segnet, volume_to_slices(rec.normalised.data)).numpy()
        labels = labels_over_time(probs.reshape(T, Z, -1, X, Y), 0.0, circular=True)
        spacing = rec.volume.spacing.tolist()
        c = volume_curves(labels, spacing)
        fn = function_from_curves(c, labels, spacing)
        new = [k for k in range(Z) if k % rec.factor]
        ssims = []
        for i, t in enumerate(rec.frames):
            ref = rec.grid.intensity.forward(resample(truth_img.frame(t), rec.normalised.affine, (X, Y, Z), order=1).data)
            ssims.append(ssim(rec.normalised.data[:, :, new, i], ref[:, :, new], 2.0))
        lag = [rec.lag[t] for t in rec.frames] if rec.lag else []
        ncc = lambda a: float(np.mean(list(a.values()))) if a else float("nan")  # noqa: E731
        rows.append({"subject": folder.name, "variant": variant, "frames": T, "recon_s": recon_s,
                     "seconds_per_frame": rec.seconds_per_frame, "peak_mb": rec.peak_memory_mb,
                     "ssim_new": ssims, "ssim_new_mean": float(np.mean(ssims)),
                     "lax_ncc_before": [ncc(r.agreement_before) for r in lag],
                     "lax_ncc_after": [ncc(r.agreement_after) for r in lag],
                     "loss_first": [r.history[0]["loss"] for r in lag],
                     "loss_best": [min(h["loss"] for h in r.history) for r in lag],
                     "losses": [[h["loss"] for h in r.history] for r in lag],
                     "iterations": [r.iterations for r in lag], "warm": [r.warm for r in lag],
                     "lv_ml": c["lv_ml"].tolist(), "rv_ml": c["rv_ml"].tolist(),
                     "lv_true_ml": true["lv_ml"].tolist(), "rv_true_ml": true["rv_ml"].tolist(),
                     "lv_rms_ml": curve_rms(c["lv_ml"], true["lv_ml"]), "rv_rms_ml": curve_rms(c["rv_ml"], true["rv_ml"]),
                     "lv_d2_ml": second_difference_rms(c["lv_ml"]), "lv_d2_true_ml": second_difference_rms(true["lv_ml"]),
                     "rv_d2_ml": second_difference_rms(c["rv_ml"]), "rv_d2_true_ml": second_difference_rms(true["rv_ml"]),
                     "lv_ef_error": fn["lv_ef"] - true_fn["lv_ef"], "rv_ef_error": fn["rv_ef"] - true_fn["rv_ef"]})
        yield rows[-1]


def meshes(outs: list[Path]) -> dict:
    found = []
    for out in outs:
        for result in out.glob("subjects/*/result.json"):
            found.extend(json.loads(result.read_text())["meshes"])
    errors = np.array([m["volume_error_pct"] for m in found])
    return {"meshes": len(found), "watertight": int(sum(m["watertight"] for m in found)),
            "max_abs_error_pct": float(np.abs(errors).max()) if errors.size else float("nan"),
            "mean_abs_error_pct": float(np.abs(errors).mean()) if errors.size else float("nan"),
            "by_structure": {s: float(np.abs([m["volume_error_pct"] for m in found if m["structure"] == s]).max())
                             for s in sorted({m["structure"] for m in found})}}


def markdown(result: dict) -> str:
    lines = ["### Throughput (2 cores)", "",
             "| method | workers | subjects x frames | wall s | subjects/h | s/subject | recon s/frame | "
             "peak MB/worker | projected 25-frame subjects/h |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["throughput"]:
        proj = f"{r['projected_subjects_per_hour']:.1f} (extrapolated)" if "projected_subjects_per_hour" in r else "measured"
        lines.append(f"| {r['method']} | {r['workers']} | {r['subjects']} x {r['frames']:.0f} | {r['wall_s']:.0f} | "
                     f"{r['subjects_per_hour']:.1f} | {r['seconds_per_subject']:.1f} | {r['recon_seconds_per_frame']:.2f} | "
                     f"{r['peak_mb_per_worker']:.0f} | {proj} |")
    lines += ["", "### Volume curves against the phantom's truth", "",
              "| method | temporal | sigma (frames) | LV RMS mL | RV RMS mL | LV 2nd diff mL (truth) | "
              "RV 2nd diff mL (truth) | LV EF error | RV EF error |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["method"], r["temporal"], r["sigma"]) for r in result["curves"]})
    for m, t, s in keys:
        rs = [r for r in result["curves"] if (r["method"], r["temporal"], r["sigma"]) == (m, t, s)]
        mean = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
        lines.append(f"| {m} | {t} | {s:g} | {mean('lv_rms_ml'):.2f} | {mean('rv_rms_ml'):.2f} | "
                     f"{mean('lv_d2_ml'):.2f} ({mean('lv_d2_true_ml'):.2f}) | {mean('rv_d2_ml'):.2f} "
                     f"({mean('rv_d2_true_ml'):.2f}) | {mean('lv_ef_error'):+.2f} | {mean('rv_ef_error'):+.2f} |")
    if result.get("lag_cine"):
        lines += ["", "### lag over one phantom cine: per frame against warm-started", "",
                  "| variant | frames | s/frame | SSIM new slices | LAX NCC after | loss first (warm frames) | "
                  "loss best (warm frames) | LV RMS mL | RV RMS mL | LV 2nd diff (truth) | RV 2nd diff (truth) | "
                  "LV EF error | RV EF error |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["lag_cine"]:
            warm = lambda k: f"{np.mean(r[k][1:]):.4f}" if r[k] else "-"  # noqa: E731
            ncc = f"{np.mean(r['lax_ncc_after']):.4f}" if r["lax_ncc_after"] else "-"
            lines.append(f"| {r['variant']} | {r['frames']} | {np.mean(r['seconds_per_frame']):.1f} | "
                         f"{r['ssim_new_mean']:.4f} | {ncc} | {warm('loss_first')} | {warm('loss_best')} | "
                         f"{r['lv_rms_ml']:.2f} | {r['rv_rms_ml']:.2f} | {r['lv_d2_ml']:.2f} ({r['lv_d2_true_ml']:.2f}) | "
                         f"{r['rv_d2_ml']:.2f} ({r['rv_d2_true_ml']:.2f}) | {r['lv_ef_error']:+.2f} | {r['rv_ef_error']:+.2f} |")
    m = result.get("meshes") or {"meshes": 0, "watertight": 0, "max_abs_error_pct": float("nan"),
                                  "mean_abs_error_pct": float("nan"), "by_structure": {}}
    lines += ["", f"### Meshes: {m['meshes']} meshes, {m['watertight']} watertight; |mesh - voxel volume| "
              f"max {m['max_abs_error_pct']:.2f} %, mean {m['mean_abs_error_pct']:.2f} % "
              f"(per structure max: {', '.join(f'{k} {v:.2f} %' for k, v in m['by_structure'].items())})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_cohort"))
    ap.add_argument("--methods", default="linear,fusion,lag")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--full-frames", type=int, default=25, help="frames of the cine the slow methods extrapolate to")
    ap.add_argument("--subjects", type=int, default=4, help="subjects for the fast methods")
    ap.add_argument("--frames", type=int, default=10, help="frames of each throughput subject")
    ap.add_argument("--slow-subjects", type=int, default=2, help="subjects for the slow methods")
    ap.add_argument("--slow-frames", default="0", help="frames the slow methods reconstruct per subject")
    ap.add_argument("--curve-subjects", type=int, default=3)
    ap.add_argument("--curve-frames", type=int, default=20)
    ap.add_argument("--sigmas", default="0.5,0.75,1.0")
    ap.add_argument("--curve-methods", default="linear", help="methods whose volume curves are measured ('' for none)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of this process (the curves)")
    ap.add_argument("--lag-cine-frames", type=int, default=0,
                    help="frames of one phantom cine (dense truth) that lag reconstructs per variant (0: skip)")
    ap.add_argument("--lag-variants", default="linear,off,previous,delta",
                    help="linear (reference) and lag warm starts (off: every frame from its own seeds)")
    ap.add_argument("--lag-warm-iterations", type=int, default=None, help="iterations of a warm-started frame")
    ap.add_argument("--lag-warm", default="off", help="lag's warm start in the throughput runs")
    ap.add_argument("--worker-threads", type=int, default=None, help="torch threads per worker (default 2 / workers)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = args.out
    root.mkdir(parents=True, exist_ok=True)
    # small subjects: every frame for the fast methods, --slow-frames of fewer subjects for the slow ones
    small = phantoms(root / "data", "small", args.subjects, args.frames, 7000, truth=False)
    slow = phantoms(root / "data", "slow", args.slow_subjects, args.frames, 7100, truth=False)
    sf = args.slow_frames
    plan = {"linear": ([small], "all"), "nearest": ([small], "all"), "cubic": ([small], "all"),
            "fusion": ([slow], sf), "register": ([slow], sf), "lag": ([slow], sf), "diffae": ([slow], sf),
            "dmcvr": ([slow], sf)}
    result: dict = {"throughput": [], "curves": [], "commands": "flock /tmp/cardiorecon-heavy.lock .venv/bin/python "
                                                               "benchmarks/bench_cohort.py " + " ".join(
                                                                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())}
    def save() -> None:  # after every step: a run cut short keeps what it measured
        result["meshes"] = meshes(outs)
        (root / "bench_cohort.json").write_text(json.dumps(result, indent=2, default=float))
        (root / "bench_cohort.md").write_text(markdown(result))

    outs: list[Path] = []
    if args.lag_cine_frames:
        cine = phantoms(root / "data", f"lag_cine_{args.lag_cine_frames}", 1, args.lag_cine_frames, 7300, truth=True)
        result["lag_cine"] = []
        for row in lag_cine(sorted(p for p in cine.iterdir() if p.is_dir())[0],
                            [v.strip() for v in args.lag_variants.split(",") if v.strip()], args.lag_warm_iterations,
                            args.threads):
            result["lag_cine"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
            save()
    curve_methods = [m.strip() for m in args.curve_methods.split(",") if m.strip()]
    if curve_methods and args.curve_subjects > 0:
        curve_data = phantoms(root / "data", "curves", args.curve_subjects, args.curve_frames, 7200, truth=True)
        folders = sorted(p for p in curve_data.iterdir() if p.is_dir())
        result["curves"] = curves(folders, curve_methods, [float(s) for s in args.sigmas.split(",")])
    save()
    print(markdown(result), flush=True)
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        data, frames = plan[method]
        for w in [int(x) for x in args.workers.split(",")]:
            out = root / "runs" / f"{method}_w{w}"
            if out.exists():
                import shutil

                shutil.rmtree(out)  # a fresh run each time: no subject resumed
            row = throughput(data, out, method, frames, w, args.full_frames, args.worker_threads, args.lag_warm)
            print(json.dumps(row), flush=True)
            result["throughput"].append(row)
            outs.append(out)
            save()
    save()
    print(markdown(result))


if __name__ == "__main__":
    main()
