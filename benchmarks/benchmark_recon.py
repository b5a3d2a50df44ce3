"""Benchmark of the reconstruction methods on phantom subjects with the truth known (issue 5).

For every subject and frame (ED, ES): reconstruct the 10 mm stack at factor 5 with each method;
score the new slices against truth_sa (on the model grid, intensities mapped like the input, data
range 2): SSIM and PSNR; sample the reconstruction on every LAX plane and score masked NCC against
the LAX image; record seconds per frame and peak memory. All methods on the same cases, one run.

    python benchmarks/benchmark_recon.py DATA_DIR... --out OUT_DIR [--methods ... dmcvr lag-dmcvr] [--lag-seed-frames N]
    python benchmarks/benchmark_recon.py DATA_DIR... --out OUT_DIR --methods register lag-register 'lag-register:lambda_cont=0'
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from cardiorecon.geometry import resample
from cardiorecon.io import read_study
from cardiorecon.metrics import psnr, ssim
from cardiorecon.models.pretrained import load_diffae, load_dmcvr
from cardiorecon.recon import FAST_LAG, ReconConfig, reconstruct
from cardiorecon.recon.lag import SEED_SETTINGS, LagConfig
from cardiorecon.evaluate import lax_ncc
from cardiorecon.recon import get_method
from cardiorecon.training.data import subject_folders


def score(study, truth, rec, i: int, t: int) -> dict:
    dense = rec.normalised.data[..., i]
    shape = dense.shape
    ref = resample(truth.frame(t), rec.normalised.affine, shape, order=1).data
    ref = rec.grid.intensity.forward(ref)
    new = [k for k in range(shape[2]) if k % rec.factor]
    row = {"ssim_new": ssim(dense[:, :, new], ref[:, :, new], 2.0), "psnr_new": psnr(dense[:, :, new], ref[:, :, new], 2.0)}
    ncc = lax_ncc(study, dense, rec.normalised.affine, t)
    row.update({f"ncc_{name}": value for name, value in ncc.items()})
    row["ncc_lax_mean"] = float(np.mean(list(ncc.values())))
    return row


def run_of(label: str, base: ReconConfig) -> tuple[str, str, ReconConfig]:
    """(label, method, config) of a --methods entry: a method name; `lag-dmcvr`, `lag-register`,
    `lag-fusion` (lag started there: reconstruct --method lag --init ...); a lag entry may end in
    `:KEY=VALUE,...` overriding fields of its LagConfig (e.g. `lag-register:lambda_cont=0`)."""
    name, _, over = label.partition(":")
    method, cfg = name, base
    if name.startswith("lag-"):
        method, cfg = "lag", dataclasses.replace(base, lag_init=name[4:])
    if over:
        if method != "lag":
            raise SystemExit(f"{label}: only lag entries take :KEY=VALUE overrides")
        fields = {f.name: f.type for f in dataclasses.fields(LagConfig)}
        changes = {}
        for item in over.split(","):
            key, _, value = item.partition("=")
            if key not in fields:
                raise SystemExit(f"{label}: {key!r} is not a LagConfig field ({', '.join(fields)})")
            kind = int if str(fields[key]).startswith("int") else float  # "int", "int | None", "float", ...
            changes[key] = None if value in ("none", "None") else kind(float(value))
        cfg = dataclasses.replace(cfg, lag=dataclasses.replace(cfg.lag, **changes))
    return label, method, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--methods", nargs="+", default=["nearest", "linear", "cubic", "diffae", "lag"])
    ap.add_argument("--factor", type=int, default=5)
    ap.add_argument("--invert-steps", type=int, default=ReconConfig.invert_steps)
    ap.add_argument("--decode-steps", type=int, default=ReconConfig.decode_steps)
    ap.add_argument("--depth", type=float, default=ReconConfig.depth)
    ap.add_argument("--lag-seed-frames", type=int, default=0,
                    help="also run lag with the seed's settings on this many (subject, frame) cases")
    ap.add_argument("--lag-seed-max-minutes", type=float, default=30.0)
    ap.add_argument("--dmcvr-weights", default=None, help="DMCVR weights for dmcvr and lag-dmcvr (default: shipped)")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = ReconConfig(invert_steps=args.invert_steps, decode_steps=args.decode_steps, depth=args.depth, lag=FAST_LAG)
    runs = [run_of(m, base) for m in args.methods]

    def weights(method, cfg):  # the network the method needs, from the method table
        cls = get_method(method)
        return cls.weights_for(cls.options_from(cfg))

    kinds = {weights(method, cfg) for _, method, cfg in runs}
    model = load_diffae(args.weights) if "diffae" in kinds or args.lag_seed_frames else None
    dmcvr = load_dmcvr(args.dmcvr_weights) if "dmcvr" in kinds else None
    networks = {"diffae": model, "dmcvr": dmcvr, None: None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, seed_cases = [], 0
    for folder in subject_folders(args.data):
        study = read_study(folder)
        truth = read_study(folder / "truth_sa.nii.gz").sax
        frames = [study.ed_frame, study.es_frame]
        todo = list(runs)
        if seed_cases < args.lag_seed_frames:
            seed_lag = dataclasses.replace(SEED_SETTINGS, max_seconds=60 * args.lag_seed_max_minutes)
            todo.append(("lag-seed", "lag", dataclasses.replace(base, lag=seed_lag)))
        for label, method, cfg in todo:
            fr = frames if label != "lag-seed" else frames[: args.lag_seed_frames - seed_cases]
            t0 = time.perf_counter()
            rec = reconstruct(study, method, factor=args.factor, frames=fr, model=networks[weights(method, cfg)],
                              config=cfg)
            if label == "lag-seed":
                seed_cases += len(fr)
            for i, t in enumerate(fr):
                row = {"subject": folder.name, "method": label, "frame": "ED" if t == study.ed_frame else "ES",
                       "seconds_per_frame": rec.seconds_per_frame[i], "peak_memory_mb": rec.peak_memory_mb,
                       **score(study, truth, rec, i, t)}
                if t in rec.lag:
                    row["lag_iterations"] = rec.lag[t].iterations
                    row["lag_best_iteration"] = rec.lag[t].best_iteration
                    row["lag_seconds_per_iteration"] = rec.lag[t].seconds / max(rec.lag[t].iterations, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
            print(f"{folder.name} {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(out / "benchmark.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    metrics = ["ssim_new", "psnr_new", "ncc_lax_mean", "seconds_per_frame", "peak_memory_mb"]
    lines = ["| method | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for label in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == label]
        cells = [f"{np.mean([r[m] for r in sel]):.4g} ± {np.std([r[m] for r in sel]):.2g}" for m in metrics]
        lines.append(f"| {label} | {len(sel)} | " + " | ".join(cells) + " |")
    seeded = [(r["subject"], r["frame"]) for r in rows if r["method"] == "lag-seed"]
    if seeded:
        for label in ("lag", "lag-seed"):
            sel = [r for r in rows if r["method"] == label and (r["subject"], r["frame"]) in seeded]
            if sel:
                lines.append(f"\nOn the {len(sel)} frame(s) run with the seed's settings, `{label}`: SSIM "
                             f"{np.mean([r['ssim_new'] for r in sel]):.4f}, PSNR {np.mean([r['psnr_new'] for r in sel]):.2f}, "
                             f"LAX NCC {np.mean([r['ncc_lax_mean'] for r in sel]):.4f}, "
                             f"{np.mean([r['seconds_per_frame'] for r in sel]):.1f} s/frame, "
                             f"{np.mean([r.get('lag_iterations', 0) for r in sel]):.0f} iterations")
    views = sorted({k for r in rows for k in r if k.startswith("ncc_") and k != "ncc_lax_mean"})
    if views:
        lines.append("\n| method | " + " | ".join(views) + " |")
        lines.append("|---|" + "---|" * len(views))
        for label in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == label]
            lines.append(f"| {label} | " + " | ".join(f"{np.mean([r[v] for r in sel]):.4f}" for v in views) + " |")
    table = "\n".join(lines)
    (out / "benchmark.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
