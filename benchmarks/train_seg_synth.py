"""Train the whole-field SAX segmenter on synthetic appearance (issue 15), resumable.

    nice -n 15 .venv/bin/python benchmarks/train_seg_synth.py --out /tmp/seg15/run --max-steps 20000

Tissue stacks: phantom seeds 100-149 of both cohorts (evaluation phantoms are 1000+). Real
contours: Sunnybrook SCD0000101, SCD0000201 (manual, LV) and ep_preclinical (automatic, LV);
SCD0000301 and biv-me patient1 are held out (benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cardiorecon.models.segnet import NAMED_SEG_CONFIGS
from cardiorecon.training.segment import SynthTrainConfig, train_synth_segnet
from cardiorecon.training.synth import SynthConfig, write_tissue_bank

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = [DATA / "sunnybrook" / "SCD0000101", DATA / "sunnybrook" / "SCD0000201",
        DATA / "ep_preclinical" / "E774S5-shortAxis"]
REAL_WEIGHTS = [1.0, 1.0, 0.5]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tissue", type=Path, default=Path("/tmp/seg15/tissue"))
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default="seg_synth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = NAMED_SEG_CONFIGS[args.config]
    scfg = SynthConfig(spacing_mm=config.pixel_spacing_mm, patch_size=config.image_size)
    for cohort in ("healthy", "heart-failure"):
        write_tissue_bank(args.tissue, list(range(100, 150)), cohort, scfg)
    real = [p for p in REAL if p.exists()]
    train_synth_segnet(config, args.tissue, real, args.out, SynthTrainConfig(max_steps=args.max_steps),
                       real_weights=[w for p, w in zip(REAL, REAL_WEIGHTS) if p.exists()])


if __name__ == "__main__":
    main()
