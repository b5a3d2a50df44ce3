"""Train the DiffAE prior on real SAX slices (issue 28), resumable.

    .venv/bin/python benchmarks/train_prior_real.py --out RUN --max-steps 4000

Starts from the shipped `diffae_tiny` EMA weights (same config: 64 x 64 at 2.0 mm, the working grid
`lag`/`diffae` use) and fine-tunes on: the 60 ACDC training patients (ED and ES; never
`training.acdc.ACDC_HOLDOUT`), written once as a slice bank `RUN/data/acdc_train.npy`, and every phase of
Sunnybrook SCD0000101 and SCD0000201; augmentation: rotations +-10 deg, shifts +-3 px, zoom 0.8-1.25
(ACDC's pixel size is unknown within 1.37-1.68 mm; scanners use 1.2-2.1), a smooth bias field, gamma;
no flips. Held out from the prior entirely (they are what it is scored on): the 20 ACDC hold-out
patients, Sunnybrook SCD0000301, ep_preclinical, biv-me patient1. The phantom enters only through the
starting weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cardiorecon.io.nifti import atomic_write
from cardiorecon.models.config import NAMED_CONFIGS
from cardiorecon.training.acdc import acdc_prior_bank, acdc_split
from cardiorecon.training.diffae import TrainConfig, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "cardiorecon" / "weights"
SHIPPED = WEIGHTS / "diffae_tiny" / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--acdc", type=Path, default=DATA / "acdc")
    ap.add_argument("--max-steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", type=Path, default=None,
                    help="starting weights (default: diffae_tiny; with --dmcvr: diffae_real)")
    ap.add_argument("--dmcvr", action="store_true", help="train DMCVR (dmcvr_labels_tiny) with segnet_real's morphology")
    ap.add_argument("--seg-weights", type=Path, default=WEIGHTS / "segnet_real" / "model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = NAMED_CONFIGS["dmcvr_labels_tiny" if args.dmcvr else "tiny"]
    init = args.init or (WEIGHTS / "diffae_real" / "model" if args.dmcvr else SHIPPED)
    bank_path = args.out / "data" / "acdc_train.npy"
    if not bank_path.is_file():
        train_patients, held = acdc_split(args.acdc)
        print(f"ACDC: {len(train_patients)} training patients, {len(held)} held out", flush=True)
        bank = acdc_prior_bank(args.acdc, train_patients, config.pixel_spacing_mm, config.image_size)
        bank_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(bank_path, lambda tmp: np.save(tmp, bank), suffix=".npy")
    data = [bank_path, DATA / "sunnybrook" / "SCD0000101", DATA / "sunnybrook" / "SCD0000201"]
    tc = TrainConfig(lr=args.lr, max_steps=args.max_steps, scale_range=(0.8, 1.25), bias_field=0.4,
                     checkpoint_every=100, figure_every=1000)
    train(config, data, args.out, tc, init_from=init, seg_weights=args.seg_weights if args.dmcvr else None)


if __name__ == "__main__":
    main()
