"""Autoencoding fidelity of DiffAE (or, with --dmcvr, DMCVR) weights (the model cards' numbers).

On N held-out phantom slices and on every slice of one held-out Sunnybrook frame: encode (z_sem by
the encoder, x_T by DDIM inversion with --invert-steps), decode with 20, 10 and 5 DDIM steps, and
report PSNR / SSIM on the model grid in [-1, 1] (data range 2). Also with the shallower codes the
reconstruction methods use (ReconConfig: depth 0.4 T, 8 steps).

    python benchmarks/eval_autoencoder.py --weights W --phantom DIR... --sunnybrook DIR --frame F --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cardiorecon.autoencoder import encode, prepare_study, volume_to_slices
from cardiorecon.diffusion import NoiseSchedule, ddim_sample
from cardiorecon.diffusion.schedule import spaced_timesteps
from cardiorecon.recon import ReconConfig
from cardiorecon.io import read_study
from cardiorecon.metrics import psnr, ssim
from cardiorecon.models.pretrained import load_diffae, load_dmcvr
from cardiorecon.training.data import subject_folders


def scores(model, x0: torch.Tensor, invert_steps: int, decode_steps: list[int], depth: float = 1.0) -> dict:
    t0 = time.perf_counter()
    morph = model.morphology(x0) if hasattr(model, "morphology") else None  # DMCVR: the slices' own morphology
    z, x_T = encode(model, x0, invert_steps, progress=True, depth=depth, morph=morph)
    t_enc = time.perf_counter() - t0
    out = {"num_slices": len(x0), "invert_steps": invert_steps, "depth": depth, "encode_s_per_slice": t_enc / len(x0)}
    top = spaced_timesteps(model.config.num_timesteps, invert_steps, depth)[-1]
    for k in decode_steps:
        t0 = time.perf_counter()
        with torch.no_grad():
            rec = ddim_sample(model.eps, x_T, NoiseSchedule.linear(model.config.num_timesteps), k,
                              cond=z if morph is None else (z, morph), top=top)
        a, b = rec[:, 0].numpy().transpose(1, 2, 0), x0[:, 0].numpy().transpose(1, 2, 0)
        out[f"decode_{k}"] = {"psnr_db": psnr(a, b, 2.0), "ssim": ssim(a, b, 2.0),
                              "decode_s_per_slice": (time.perf_counter() - t0) / len(x0)}
        print(k, out[f"decode_{k}"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--phantom", nargs="+", required=True, help="held-out phantom subjects (or folders of them)")
    ap.add_argument("--num-slices", type=int, default=200)
    ap.add_argument("--sunnybrook", default=None, help="a Sunnybrook DICOM folder")
    ap.add_argument("--frame", type=int, default=0, help="the held-out Sunnybrook frame")
    ap.add_argument("--invert-steps", type=int, default=100)
    ap.add_argument("--decode-steps", type=int, nargs="+", default=[20, 10, 5])
    ap.add_argument("--dmcvr", action="store_true", help="the weights are DMCVR weights")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    model = load_dmcvr(args.weights) if args.dmcvr else load_diffae(args.weights)
    cfg = model.config
    rng = np.random.default_rng(0)
    slices = []
    for folder in subject_folders(args.phantom):
        grid = prepare_study(read_study(folder), cfg.pixel_spacing_mm, cfg.image_size)
        slices.append(volume_to_slices(grid.image.data))
    pool = torch.cat(slices)
    x0 = pool[np.sort(rng.choice(len(pool), size=min(args.num_slices, len(pool)), replace=False))]
    result = {"weights": str(args.weights or "shipped"), "config": cfg.name,
              "phantom": scores(model, x0, args.invert_steps, args.decode_steps)}
    rc = ReconConfig()  # the codes the reconstruction methods use
    result["phantom_recon_codes"] = scores(model, x0, rc.invert_steps, [rc.decode_steps], rc.depth)
    if args.sunnybrook:
        grid = prepare_study(read_study(args.sunnybrook), cfg.pixel_spacing_mm, cfg.image_size)
        x_sb = volume_to_slices(grid.image.data[..., args.frame])
        result["sunnybrook"] = {"folder": args.sunnybrook, "frame": args.frame,
                                **scores(model, x_sb, args.invert_steps, args.decode_steps)}
        result["sunnybrook_recon_codes"] = scores(model, x_sb, rc.invert_steps, [rc.decode_steps], rc.depth)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
