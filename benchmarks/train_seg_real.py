"""Train the whole-field SAX segmenter on real labelled hearts (issue 25), resumable.

    .venv/bin/python scripts/train_seg_real.py --out RUN --max-steps 3000

Starts from the shipped `segnet_synth` weights (or `--init`). Each batch of 16 (default shares): 9 ACDC slices (the 60 training
patients, never `training.acdc.ACDC_HOLDOUT`), 3 contoured Sunnybrook / ep_preclinical slices (LV
only, partial labels marginalised) and 4 synthetic-appearance images from phantom tissue stacks (seeds
100-149). Held out: the 20 ACDC hold-out patients, Sunnybrook SCD0000301, biv-me patient1, phantoms 1000+."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cardiorecon.models.segnet import NAMED_SEG_CONFIGS
from cardiorecon.segment import DEFAULT_WINDOW_SEGNET
from cardiorecon.training.acdc import acdc_real_slices, acdc_split
from cardiorecon.training.segment import SynthTrainConfig, train_synth_segnet
from cardiorecon.training.synth import SynthConfig, write_tissue_bank

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = [DATA / "sunnybrook" / "SCD0000101", DATA / "sunnybrook" / "SCD0000201",
        DATA / "ep_preclinical" / "E774S5-shortAxis"]
REAL_WEIGHTS = [1.0, 1.0, 0.5]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tissue", type=Path, default=Path("/tmp/seg25/tissue"))
    ap.add_argument("--acdc", type=Path, default=DATA / "acdc")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--transpose", action="store_true", help="ACDC slices transposed (the other chirality)")
    ap.add_argument("--init", default=str(DEFAULT_WINDOW_SEGNET), help="weights to start from (same architecture)")
    ap.add_argument("--acdc-share", type=int, default=9, help="ACDC slices per batch of 16")
    ap.add_argument("--contour-share", type=int, default=3, help="contoured (LV-only) real slices per batch of 16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = NAMED_SEG_CONFIGS["seg_real"]
    scfg = SynthConfig(spacing_mm=config.pixel_spacing_mm, patch_size=config.image_size)
    if not any(args.tissue.glob("*.npz")):
        for cohort in ("healthy", "heart-failure"):
            write_tissue_bank(args.tissue, list(range(100, 150)), cohort, scfg)
    train, _ = acdc_split(args.acdc)
    acdc = acdc_real_slices(args.acdc, train, transpose=args.transpose)
    tc = SynthTrainConfig(max_steps=args.max_steps, lr=args.lr, warmup_steps=100, real_fraction=args.contour_share / 16,
                          full_real_fraction=args.acdc_share / 16, init_weights=args.init)
    real = [p for p in REAL if p.exists()]
    train_synth_segnet(config, args.tissue, real, args.out, tc,
                       real_weights=[w for p, w in zip(REAL, REAL_WEIGHTS) if p.exists()],
                       full_real=acdc, full_real_source=str(args.acdc))


if __name__ == "__main__":
    main()
