"""Issue 28: the diffusion prior trained on real hearts against the shipped one, on real slice-drop.

Slice-drop as `bench_selfsr` (every other SAX slice removed, factor 2, the dropped slices scored with
SSIM / PSNR on the working grid in [-1, 1]) on the same cases (`--cases ep,sb,acdc`: ep_preclinical
frames 0 and 9, Sunnybrook SCD0000101/201/301 ED and ES, the 20 ACDC hold-out patients ED and ES).
Variants: `linear`, `register`, and the prior-based methods with the shipped weights (`-tiny`) or
the weights of `--real` (`-real`): `diffae` (codes of the acquired slices interpolated and decoded),
`lag` refining register (`lag-reg`; where no LAX view guides, which is every case here but
ep_preclinical, it returns register's volume), and `lag` as shipped, from diffae's codes (`lag`).

Note what each prior saw: the shipped `diffae_tiny` was fine-tuned on Sunnybrook SCD0000101/201/301
(all but frame 0 of 301), so its Sunnybrook rows are not held out; the real prior
(`benchmarks/train_prior_real.py`) saw SCD0000101 and SCD0000201 (every phase) and the 60 ACDC training
patients, and it starts from diffae_tiny's weights, which saw SCD0000301: the cases held out from both
priors are the 20 ACDC hold-out patients and ep_preclinical.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_prior.py --out OUT --real RUN/weights/ema \\
        --variants linear,register,diffae-tiny,diffae-real [--cases ep,sb,acdc] [--ed-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_selfsr import dropped_slice_rows, per_case, run_cases, summary  # noqa: E402  (same cases and scoring)

from cardiorecon.models.pretrained import load_diffae, load_dmcvr  # noqa: E402
from cardiorecon.recon import FAST_LAG, ReconConfig, reconstruct  # noqa: E402

# variant -> (method, prior: None / "tiny" / "real", ReconConfig overrides)
VARIANTS = {
    "linear": ("linear", None, {}), "register": ("register", None, {}),
    "diffae-tiny": ("diffae", "tiny", {}), "diffae-real": ("diffae", "real", {}),
    "lag-reg-tiny": ("lag", "tiny", {"lag_init": "register"}), "lag-reg-real": ("lag", "real", {"lag_init": "register"}),
    "lag-tiny": ("lag", "tiny", {}), "lag-real": ("lag", "real", {}),  # lag as shipped: started from diffae's codes
    # DMCVR: the shipped dmcvr_labels_tiny (phantom + Sunnybrook, seg_tiny's morphology) against the one retrained
    # on the real slices with segnet_real's morphology (`train_prior_real.py --dmcvr`, weights of --dmcvr-real)
    "dmcvr-tiny": ("dmcvr", "dmcvr-tiny", {}), "dmcvr-real": ("dmcvr", "dmcvr-real", {}),
    # lag refining register on the central 64 px window of each new slice (LagConfig.window), 10 or 3 iterations
    "lag-reg-tiny-w64": ("lag", "tiny", {"lag_init": "register", "lag": dataclasses.replace(FAST_LAG, window=64)}),
    "lag-reg-tiny-w64-3it": ("lag", "tiny", {"lag_init": "register",
                                             "lag": dataclasses.replace(FAST_LAG, window=64, max_iterations=3)}),
    "lag-reg-tiny-full": ("lag", "tiny", {"lag_init": "register",
                                          "lag": dataclasses.replace(FAST_LAG, window=None, max_iterations=10)}),
}
# rows of `lag-reg-tiny-v0` in a results folder are lag --init register before the refinement (commit 9622ab2:
# the prior's decoding of register's codes, and diffae's interpolation where no LAX view guides)


def score(study, sub, variant: str, frames: list[int], models: dict) -> list[dict]:
    method, prior, over = VARIANTS[variant]
    model = None if prior is None else models[prior]
    # every variant on the prior's working grid (64 px of 2 mm): linear and register too, so that the
    # scores compare the same pixels
    spacing, size = (2.0, 64) if model is None else (model.config.pixel_spacing_mm, model.config.image_size)
    cfg = ReconConfig(grid_spacing_mm=spacing, grid_size=size, **over)
    rec = reconstruct(sub, method, factor=2, frames=frames, model=model, config=cfg, align="off", progress=False)
    return dropped_slice_rows(study, rec, variant, frames)


def lax_holdout(out: Path, prior: str, real: str | None, methods: list[str], dmcvr_real: str | None = None,
                lag_overrides: dict | None = None, tag: str = "") -> None:
    """Each of biv-me's LAX views held out in turn (the others guide), frame 0 (the study gives no ED),
    factor 5: the NCC of the reconstruction on the held-out view's plane, as `cardiorecon evaluate
    --protocol lax-holdout`."""
    from cardiorecon.evaluate import lax_holdout_protocol
    from cardiorecon.evaluator import Evaluator

    from bench_selfsr import DATA

    lag = dataclasses.replace(FAST_LAG, **(lag_overrides or {}))
    ev = Evaluator(methods=methods, config=ReconConfig(lag_init="register", lag=lag), progress=False)
    ev.load(weights=None if prior == "tiny" else real, dmcvr_weights=None if prior == "tiny" else dmcvr_real,
            segmentation=False)
    rows = lax_holdout_protocol(ev, [DATA / "bivme_patient1" / "dicoms"], frames="0", factor=5)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lax_holdout_{prior}{tag}.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    per: dict[str, list] = {}
    for r in rows:
        if r["ncc"] != "":
            per.setdefault(r["method"], []).append((r["structure"], float(r["ncc"]), float(r["seconds"])))
    for method, vals in per.items():
        print(f"{method:9s} mean NCC {sum(v[1] for v in vals) / len(vals):.4f}  "
              + "  ".join(f"{v[0]} {v[1]:.4f}" for v in vals) + f"  {vals[0][2]:.0f} s/frame", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--real", default=None, help="the real prior's weights (stem of .safetensors/.json)")
    ap.add_argument("--dmcvr-real", default=None, help="the retrained DMCVR's weights (folder with model + segnet)")
    ap.add_argument("--variants", default="linear,register,diffae-tiny,diffae-real")
    ap.add_argument("--cases", default="ep,sb,acdc")
    ap.add_argument("--only", default="")
    ap.add_argument("--ed-only", action="store_true")
    ap.add_argument("--ref", default="register")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--lax-holdout", default=None, choices=["tiny", "real"],
                    help="instead: the biv-me LAX hold-out (frame 0, factor 5) of --lax-methods (lag refining "
                         "register) with this prior")
    ap.add_argument("--lax-methods", default="linear,register,fusion,lag")
    ap.add_argument("--lag-window", type=int, default=-1, help="LagConfig.window for the hold-out's lag (-1: shipped, "
                                                                 "0: the whole slice)")
    ap.add_argument("--lag-iterations", type=int, default=None, help="LagConfig.max_iterations for the hold-out's lag")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.lax_holdout:
        over = {} if args.lag_window < 0 else {"window": args.lag_window or None}
        if args.lag_iterations:
            over["max_iterations"] = args.lag_iterations
        tag = "".join(f"_{k}{v}" for k, v in over.items())
        lax_holdout(args.out, args.lax_holdout, args.real, args.lax_methods.split(","), args.dmcvr_real, over, tag)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS and v != "lag-reg-tiny-v0"]  # v0: summarised from rows only
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    # prior -> (loader, weights, the flag that gives them); None weights: the shipped ones
    sources = {"tiny": (load_diffae, None, None), "real": (load_diffae, args.real, "--real"),
               "dmcvr-tiny": (load_dmcvr, None, None), "dmcvr-real": (load_dmcvr, args.dmcvr_real, "--dmcvr-real")}
    models = {}
    for prior in {VARIANTS.get(v, (None, None))[1] for v in variants} - {None}:
        loader, weights, flag = sources[prior]
        if flag is not None and weights is None:
            raise SystemExit(f"{flag} WEIGHTS is needed for the {prior} variants")
        models[prior] = loader(weights).eval()
    rows = run_cases(args.out, args.cases, variants, lambda st, sub, v, fr: score(st, sub, v, fr, models),
                     args.only, args.ed_only, args.summary_only)
    text = summary(rows, variants, args.ref)
    (args.out / "summary.md").write_text(text + "\n")
    results = [{"case": c, "variant": v, "ssim": float(m[0]), "psnr": float(m[1]), "seconds_per_frame": float(m[2])}
               for (c, v), m in per_case(rows).items() if v in VARIANTS]
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
