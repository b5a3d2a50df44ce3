"""Benchmark of the breath-hold alignment (issue 13), run under the shared CPU lock:

    flock /tmp/cardiorecon-heavy.lock .venv/bin/python benchmarks/bench_align.py phantom DIR... --out OUT.json
    flock /tmp/cardiorecon-heavy.lock .venv/bin/python benchmarks/bench_align.py holdout STUDY... --out OUT.json

phantom: each subject folder's recovered shifts against subject.json's breath_hold_shifts_mm (zero
when the phantom was made without --breath-hold): RMS and largest error (mm), intersection NCC
before/after, seconds per study (all frames).
holdout: each LAX view held out in turn: align with the others, then the held-out view's
intersection NCC as acquired and after the shifts (mean over its lines), seconds per study.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cardiorecon.align import AlignConfig, estimate_alignment, line_agreement
from cardiorecon.io import read_study


def phantom(folders: list[Path], cfg: AlignConfig) -> list[dict]:
    rows = []
    for folder in folders:
        study = read_study(folder)
        info = json.loads((folder / "subject.json").read_text())
        Z = study.sax.spatial_shape[2]
        truth = np.zeros((Z, 2)) if info.get("breath_hold_shifts_mm") is None else np.asarray(info["breath_hold_shifts_mm"])
        a = estimate_alignment(study, config=cfg)
        err = a.sax_shifts_mm - truth
        row = {"case": folder.name, "slices": Z, "frames": study.num_frames, "lines": len(a.lines),
               "true_rms_mm": float(np.sqrt((truth ** 2).sum(1).mean())),
               "rms_error_mm": float(np.sqrt((err ** 2).sum(1).mean())),
               "max_error_mm": float(np.abs(err).max()), "ncc_before": a.mean_ncc("before"),
               "ncc_after": a.mean_ncc("after"), "seconds": a.seconds}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def holdout(studies: list[Path], cfg: AlignConfig) -> list[dict]:
    rows = []
    for path in studies:
        study = read_study(path)
        for held in study.lax:
            others = [v for v in study.lax if v != held]
            a = estimate_alignment(study, others, cfg)
            lines = line_agreement(study, a.sax_shifts_mm, [held], cfg)
            row = {"case": str(path), "held_out": held, "guides": others, "lines": len(lines),
                   "held_ncc_before": float(np.mean([x["ncc_before"] for x in lines])) if lines else None,
                   "held_ncc_after": float(np.mean([x["ncc_after"] for x in lines])) if lines else None,
                   "guide_ncc_before": a.mean_ncc("before"), "guide_ncc_after": a.mean_ncc("after"),
                   "shift_rms_mm": float(np.sqrt((a.sax_shifts_mm ** 2).sum(1).mean())),
                   "max_shift_mm": float(np.abs(a.sax_shifts_mm).max()),
                   "sax_shifts_mm": np.round(a.sax_shifts_mm, 2).tolist(), "lax_offsets_mm": a.lax_offsets_mm,
                   "seconds": a.seconds,
                   "frames": study.num_frames, "slices": study.sax.spatial_shape[2]}
            print(json.dumps({k: v for k, v in row.items() if k != "sax_shifts_mm"}), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["phantom", "holdout"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--radius", type=float, default=AlignConfig.radius_mm)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lax-offsets", action="store_true", help="also estimate each LAX view's normal offset")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AlignConfig(radius_mm=args.radius, lax_offsets=args.lax_offsets)
    t0 = time.perf_counter()
    rows = phantom(args.paths, cfg) if args.mode == "phantom" else holdout(args.paths, cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mode": args.mode, "config": cfg.__dict__, "rows": rows,
                                    "total_seconds": time.perf_counter() - t0}, indent=2, default=list))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
