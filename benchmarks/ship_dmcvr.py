"""Ship trained DMCVR weights: copy the EMA decoder of a run and its frozen segmentation network
into the package (model.* and segnet.*), and write the model card from the run's log, an evaluation
JSON of `benchmarks/eval_autoencoder.py --dmcvr` and, optionally, a Markdown file of measurements
(the morphology-encoder comparison, the benchmark) appended as it is.

    python benchmarks/ship_dmcvr.py --run RUN [--pretrain RUN] --eval EVAL.json [--append NOTES.md]
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


def _training_line(label: str, r: dict) -> str:
    excluded = f"; frames held out {r['exclude_frames']}" if r["exclude_frames"] else ""
    return (f"- {label}: from {r['init_from']}, {r['steps']} steps, batch {r['train']['batch_size']}, AdamW "
            f"{r['train']['lr']}, seed {r['train']['seed']}, on {r['num_slices']} slices of {', '.join(r['data'])}"
            f"{excluded}; {r['wall_hours']} h, median {r['median_steps_per_s']:.2f} steps/s; final loss (one batch) "
            f"{r['final_loss']:.4f}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="the training run whose EMA weights ship")
    ap.add_argument("--pretrain", type=Path, default=None, help="an earlier run the shipped one continued from")
    ap.add_argument("--eval", required=True, type=Path)
    ap.add_argument("--append", type=Path, default=None, help="Markdown appended to the card")
    ap.add_argument("--dest", type=Path, default=DEFAULT_DMCVR)
    args = ap.parse_args()
    dest = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((args.run / "weights" / "ema", "model"), (args.run / "weights" / "segnet", "segnet")):
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(src.with_suffix(suffix), dest / f"{name}{suffix}")
    model = load_dmcvr(dest)  # refuses a pair that does not fit
    figures = sorted((args.run / "figures").glob("step_*.png"))
    if figures:
        shutil.copyfile(figures[-1], dest / "autoencoding.png")
    runs = ([("Pre-training", run_summary(args.pretrain))] if args.pretrain else []) + \
        [("Training" if not args.pretrain else "Fine-tuning", run_summary(args.run))]
    ev = json.loads(args.eval.read_text())
    cfg, seg = model.config, model.seg_config
    n_dec = sum(p.numel() for p in model.diffae.parameters())
    n_seg = sum(p.numel() for p in model.morphology.segnet.parameters())
    if cfg.morph_source == "labels":
        n_enc = sum(p.numel() for p in model.diffae.decoder.extra.parameters())
        morphology = (f"its predicted label map: the probabilities of LV cavity, LV myocardium and RV cavity at full "
                      f"resolution ({cfg.morph_channels} channels), through a small conv encoder trained with the "
                      f"decoder ({n_enc:,} parameters: 3x3 convs with {cfg.morph_level} stride-2 steps down to that "
                      f"resolution, then the 3x3 conv)")
    else:
        morphology = (f"its encoder features at that level ({seg.features[cfg.morph_level]} channels) weighted by "
                      f"its own predicted probability of LV cavity, LV myocardium and RV cavity: "
                      f"{cfg.morph_channels} channels, through a 3x3 conv")
    training = "\n".join(_training_line(label, r) for label, r in runs)
    card = f"""# DMCVR `{cfg.name}`: model card

Morphology-guided diffusion (arXiv 2308.09223) on the `tiny` grid: {cfg.image_size} x {cfg.image_size} SAX
slices at {cfg.pixel_spacing_mm} mm in [-1, 1]. The DiffAE decoder (AdaGN on t and z_sem in every residual block,
{n_dec / 1e6:.2f} M parameters with its semantic encoder) takes, in addition, regional morphology features
concatenated at 1/{2 ** cfg.morph_level} resolution. They come from the frozen segmentation network
`{seg.name}` ({n_seg / 1e6:.2f} M parameters, `segnet.safetensors`): {morphology}. At inference nothing is
optimised: z_sem, x_T (DDIM inversion under the morphology condition) and the morphology of the acquired
slices are interpolated (lerp, slerp, lerp) and the new slices decoded in one batch.

Files: `model.safetensors` + `model.json` (decoder config), `segnet.safetensors` + `segnet.json`.
Loading refuses a decoder and a segmentation network whose shapes or configs do not fit.

## Training (2 CPU cores, bf16 autocast, the Lightning engine of the DiffAE)
{training}
- The decoder's new input channels start at zero (the plain DiffAE's weights elsewhere), so training starts
  from the DiffAE and learns to use the morphology. The epsilon loss alone (the seed's optional Dice + focal
  segmentation head was not used).

## Autoencoding fidelity (`benchmarks/eval_autoencoder.py --dmcvr`)
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
z_sem and morphology (bottom), at the end of training.
"""
    if args.append:
        card += "\n" + args.append.read_text()
    (dest / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
