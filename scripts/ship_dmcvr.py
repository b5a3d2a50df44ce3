"""Ship trained DMCVR weights: copy the EMA decoder of a run and its frozen segmentation network
into the package (model.* and segnet.*), and write the model card from the runs' logs and an
evaluation JSON of `scripts/eval_autoencoder.py --dmcvr`.

    python scripts/ship_dmcvr.py --pretrain RUN --finetune RUN --eval EVAL.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ship_weights import fidelity_table, run_summary  # noqa: E402

from cardiorecon.models.pretrained import DEFAULT_DMCVR, load_dmcvr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain", required=True, type=Path)
    ap.add_argument("--finetune", required=True, type=Path)
    ap.add_argument("--eval", required=True, type=Path)
    ap.add_argument("--dest", type=Path, default=DEFAULT_DMCVR)
    args = ap.parse_args()
    dest = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((args.finetune / "weights" / "ema", "model"), (args.finetune / "weights" / "segnet", "segnet")):
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(src.with_suffix(suffix), dest / f"{name}{suffix}")
    model = load_dmcvr(dest)  # refuses a pair that does not fit
    figures = sorted((args.finetune / "figures").glob("step_*.png"))
    if figures:
        shutil.copyfile(figures[-1], dest / "autoencoding.png")
    pre, fine = run_summary(args.pretrain), run_summary(args.finetune)
    ev = json.loads(args.eval.read_text())
    cfg, seg = model.config, model.seg_config
    n_dec = sum(p.numel() for p in model.diffae.parameters())
    n_seg = sum(p.numel() for p in model.morphology.segnet.parameters())
    card = f"""# DMCVR `{cfg.name}`: model card

Morphology-guided diffusion (arXiv 2308.09223) on the `tiny` grid: {cfg.image_size} x {cfg.image_size} SAX
slices at {cfg.pixel_spacing_mm} mm in [-1, 1]. The DiffAE decoder (AdaGN on t and z_sem in every residual block,
{n_dec / 1e6:.2f} M parameters with its semantic encoder) takes, in addition, regional morphology features
concatenated (after a 3x3 conv) at 1/{2 ** cfg.morph_level} resolution: the frozen segmentation network
`{seg.name}` ({n_seg / 1e6:.2f} M parameters, `segnet.safetensors`) gives its encoder features at that level
({seg.features[cfg.morph_level]} channels) weighted by its own predicted probability of LV cavity, LV
myocardium and RV cavity: {cfg.morph_channels} channels. At inference nothing is optimised: z_sem, x_T (DDIM
inversion under the morphology condition) and the morphology features of the acquired slices are
interpolated (lerp, slerp, lerp) and the new slices decoded in one batch.

Files: `model.safetensors` + `model.json` (decoder config), `segnet.safetensors` + `segnet.json`.
Loading refuses a decoder and a segmentation network whose shapes or configs do not fit.

Choice of morphology encoder: the segmentation network's features (trained already on the same
phantom + Sunnybrook slices, carrying texture as well as shape); a separately trained encoder over the
predicted label map was not trained and compared here for lack of CPU time.

## Training (2 CPU cores, bf16 autocast, Lightning engine of the DiffAE)
- Initialised from the plain DiffAE pre-training ({pre['init_from']}); the decoder's new input channels
  start at zero, so training starts from the DiffAE and learns to use the morphology.
- Pre-training: {pre['steps']} steps, batch {pre['train']['batch_size']}, AdamW {pre['train']['lr']}, on
  {pre['num_slices']} slices of {', '.join(pre['data'])} (phantom, healthy); {pre['wall_hours']} h,
  median {pre['median_steps_per_s']:.2f} steps/s.
- Fine-tuning: {fine['steps']} steps on {fine['num_slices']} slices of {', '.join(fine['data'])} (phantom heart
  failure + Sunnybrook SCD0000101 and SCD0000201; SCD0000301 held out entirely, as for the segmentation
  network); {fine['wall_hours']} h, median {fine['median_steps_per_s']:.2f} steps/s. Final loss (one batch):
  {fine['final_loss']:.4f}.
- The epsilon loss alone (the seed's optional Dice + focal segmentation head was not used).

## Autoencoding fidelity (`scripts/eval_autoencoder.py --dmcvr`)
Each slice encoded with its own morphology; PSNR/SSIM on the model grid (data range 2).
"""
    blocks = [("phantom", "held-out phantom slices, full-depth codes"),
              ("phantom_recon_codes", "the same phantom slices, the codes `dmcvr` uses"),
              ("sunnybrook", "held-out Sunnybrook frame, full-depth codes"),
              ("sunnybrook_recon_codes", "the same Sunnybrook frame, the codes `dmcvr` uses")]
    for key, label in blocks:
        if key in ev:
            r = ev[key]
            card += (f"\n{r['num_slices']} slices, {label} (inversion to {r['depth']} T in {r['invert_steps']} "
                     f"steps, encode {r['encode_s_per_slice']:.2f} s/slice):\n\n{fidelity_table(r)}\n")
    card += """
`autoencoding.png`: held-out slices (top), autoencoded (middle), decoded from random x_T with the same
z_sem and morphology (bottom), at the end of fine-tuning.
"""
    (dest / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
