"""Pre-train `selfsr`'s network on the ACDC training patients (issue 26).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pretrain_selfsr.py --out RUN/selfsr_pre \\
        [--patients 16] [--steps 3000] [--factor 2 --drop 2]

Subjects: ACDC training patients only (`training.acdc.acdc_split`: never `ACDC_HOLDOUT`), ED and ES, read
as `benchmarks/bench_selfsr.py` reads ACDC (HDF5 without geometry: nominal 1.5 mm pixels, 10 mm step, 8 mm
slices); `--patients N` takes N of the 60 spread over the five groups. Sunnybrook, ep_preclinical and
biv-me stay out: they are `bench_selfsr.py`'s scored cases. `--factor 2 --drop 2` pre-trains for the
slice-drop protocol (every other slice dropped, reconstructed at factor 2); `--drop 1 --factor 5` for a
UK Biobank-like stack reconstructed at 2 mm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_selfsr import DATA, acdc_study  # noqa: E402

from cardiorecon.recon.selfsr import SelfSRConfig  # noqa: E402
from cardiorecon.training.acdc import acdc_split  # noqa: E402
from cardiorecon.training.selfsr import pretrain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="weights stem (writes OUT.safetensors and OUT.json)")
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--drop", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_patients, _ = acdc_split(DATA / "acdc")  # sorted by patient number: groups of 20 in ACDC's order
    pick = sorted(train_patients)
    pick = [pick[i] for i in np.linspace(0, len(pick) - 1, min(args.patients, len(pick))).round().astype(int)]
    studies = {f"acdc{p:03d}": (acdc_study(p), [0, 1]) for p in pick}
    print(f"pre-training on {len(studies)} ACDC training patients (ED, ES)", flush=True)
    path = pretrain(studies, args.out, args.factor, args.drop, SelfSRConfig(), args.steps)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
