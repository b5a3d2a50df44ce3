"""Per-subject methods (issue 14): `lag --init register|fusion` against its starting volume, and the
cost of a whole cine with `fusion`.

Part 1 (--lag CASE...): for a slice-drop case (every other SAX slice dropped, factor 2) score the
dropped slices (SSIM, PSNR); for a case with LAX views and --holdout VIEW, guide with the other
views and score masked NCC on the held-out plane (factor 5). Methods: register, fusion, lag (diffae
codes), lag --init register, lag --init fusion; shipped DiffAE weights, the CPU lag defaults.
Part 2 (--cine CASE): `fusion` on every frame of one study (factor 2 of the slice-drop stack):
seconds per frame and for the whole cine.

    flock /tmp/cardiorecon-heavy.lock .venv/bin/python benchmarks/bench_per_subject.py \\
        --lag ../shared/data/ep_preclinical --holdout-case ../shared/data/bivme_patient1/dicoms \\
        --cine ../shared/data/sunnybrook/SCD0000101 --out /tmp/bench14/per_subject
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cardiorecon.evaluate import drop_slices
from cardiorecon.geometry import resample
from cardiorecon.io import read_study
from cardiorecon.lax_operator import LaxOperator
from cardiorecon.metrics.image import masked_ncc, masked_ssim, psnr, ssim
from cardiorecon.phase import lax_frame
from cardiorecon.recon import ReconConfig, get_method, reconstruct

VARIANTS = [("register", "register", "diffae"), ("fusion", "fusion", "diffae"), ("lag", "lag", "diffae"),
            ("lag --init register", "lag", "register"), ("lag --init fusion", "lag", "fusion")]


def network(method: str, config: ReconConfig, model):
    """The DiffAE for the methods that need one (the method table says), else None."""
    cls = get_method(method)
    return model if cls.weights_for(cls.options_from(config)) else None


def slice_drop_rows(path: Path, model, frames: list[int]) -> list[dict]:
    study = read_study(path)
    sub = drop_slices(study, 2)
    rows = []
    for name, method, init in VARIANTS:
        cfg = ReconConfig(lag_init=init)
        rec = reconstruct(sub, method, factor=2, frames=frames, model=network(method, cfg, model), config=cfg,
                          align="auto")
        aff, shape = rec.normalised.affine, rec.normalised.spatial_shape
        for i, t in enumerate(frames):
            ref = rec.grid.intensity.forward(resample(study.sax.frame(t), aff, shape, order=1).data)
            d = rec.normalised.data[..., i]
            rows.append({"case": path.name, "protocol": "slice-drop", "method": name, "frame": t,
                         "ssim": ssim(d[:, :, 1::2], ref[:, :, 1::2], 2.0),
                         "psnr": psnr(d[:, :, 1::2], ref[:, :, 1::2], 2.0),
                         "seconds": rec.seconds_per_frame[i]})
            print(rows[-1], flush=True)
    return rows


def holdout_rows(path: Path, model, held: str | None, frames: list[int] | None) -> list[dict]:
    study = read_study(path)
    held = held or sorted(study.lax)[0]
    frames = frames or [t for t in (study.ed_frame, study.es_frame) if t is not None] or [0]
    others = [v for v in study.lax if v != held]
    rows = []
    for name, method, init in VARIANTS:
        cfg = ReconConfig(lag_init=init)
        rec = reconstruct(study, method, factor=5, frames=frames, lax_views=others, model=network(method, cfg, model),
                          config=cfg, align="auto")
        op = LaxOperator.for_view(rec.normalised.affine, rec.normalised.spatial_shape, study.lax[held])
        valid = op.valid.numpy().astype(bool)
        for i, t in enumerate(frames):
            sampled = op.sample(torch.from_numpy(np.ascontiguousarray(rec.normalised.data[..., i]))).numpy()
            image = lax_frame(study.lax[held], t, study.num_frames)
            rows.append({"case": path.name, "protocol": f"lax-holdout {held}", "method": name, "frame": t,
                         "ncc": masked_ncc(sampled, image, valid), "ssim": masked_ssim(sampled, image, valid),
                         "seconds": rec.seconds_per_frame[i]})
            print(rows[-1], flush=True)
    return rows


def cine_cost(path: Path) -> dict:
    study = drop_slices(read_study(path), 2)
    t0 = time.perf_counter()
    rec = reconstruct(study, "fusion", factor=2, frames="all", align="auto", progress=True)
    total = time.perf_counter() - t0
    out = {"case": path.name, "frames": len(rec.frames), "seconds_total": total,
           "seconds_per_frame_mean": float(np.mean(rec.seconds_per_frame)),
           "seconds_per_frame_max": float(np.max(rec.seconds_per_frame)),
           "temporal_term_frames": sum(1 for r in rec.fusion.values() if r.history[0]["temporal"] > 0)}
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lag", nargs="*", type=Path, default=[], help="slice-drop cases for the lag --init comparison")
    ap.add_argument("--frames", default="0", help="comma-separated frames for the slice-drop cases")
    ap.add_argument("--holdout-case", nargs="*", type=Path, default=[], help="LAX hold-out cases")
    ap.add_argument("--holdout", default=None, help="the held-out view (default: the first by name)")
    ap.add_argument("--cine", type=Path, default=None, help="a study to run fusion on every frame of")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"rows": []}
    if args.lag or args.holdout_case:
        from cardiorecon.models.pretrained import load_diffae

        model = load_diffae(None)
        frames = [int(x) for x in args.frames.split(",")]
        for case in args.lag:
            result["rows"] += slice_drop_rows(case, model, frames)
        for case in args.holdout_case:
            result["rows"] += holdout_rows(case, model, args.holdout, None)
    if args.cine is not None:
        result["cine"] = cine_cost(args.cine)
    (args.out / "per_subject.json").write_text(json.dumps(result, indent=2, default=float))
    for r in result["rows"]:
        vals = " ".join(f"{k} {r[k]:.3f}" for k in ("ssim", "psnr", "ncc", "seconds") if k in r)
        print(f"{r['case']:16s} {r['protocol']:18s} {r['method']:20s} frame {r['frame']}: {vals}")


if __name__ == "__main__":
    main()
