"""linear, register and fusion through one evaluation protocol on one case, printed as one line per
method (the same functions and defaults as `cardiorecon evaluate`, alignment auto; segmentation only
with `seg`; FRAMES as for evaluate, default ed-es). Quick per-case checks for issue 14.

    [FUSION=lambda_lax=1.0] [METHODS=fusion] .venv/bin/python benchmarks/bench_protocol_quick.py \
        slice-drop|lax-holdout|phantom CASE [seg] [FRAMES]
"""
import sys, time, numpy as np, torch
torch.set_num_threads(2)
from pathlib import Path
from cardiorecon.evaluate import Evaluator, PROTOCOLS
protocol, folder = sys.argv[1], Path(sys.argv[2])
seg = "seg" in sys.argv[3:]
frames = next((a for a in sys.argv[3:] if a != "seg"), "ed-es")
import os

from cardiorecon.recon import ReconConfig
from cardiorecon.recon.fusion import FusionConfig

# FUSION="lambda_lax=1.0,iterations=60" and METHODS="fusion" change the settings (tuning).
fusion = FusionConfig(**{k: float(v) if "." in v else int(v) for k, v in
                         (kv.split("=") for kv in os.environ.get("FUSION", "").split(",") if kv)})
methods = os.environ.get("METHODS", "linear,register,fusion").split(",")
ev = Evaluator(methods, progress=False, echo=lambda s: None, align="auto",
               config=ReconConfig(fusion=fusion)).load(segmentation=seg)
t0 = time.time()
rows = PROTOCOLS[protocol](ev, [folder]) if protocol == "phantom" else PROTOCOLS[protocol](ev, [folder], frames=frames)
for m in ev.methods:
    rs = [r for r in rows if r["method"] == m and r["structure"] in ("image",) or (r["method"] == m and str(r["structure"]).startswith("lax_"))]
    def mean(c):
        v = [float(r[c]) for r in rs if r[c] != "" and np.isfinite(float(r[c]))]
        return np.mean(v) if v else float("nan")
    dice = {s: np.mean([float(r["dice"]) for r in rows if r["method"] == m and r["structure"] == s and r["dice"] != ""]) for s in ("lv_cavity", "lv_myocardium", "rv_cavity") if any(r["method"] == m and r["structure"] == s and r["dice"] != "" for r in rows)}
    hd = [float(r["hd95"]) for r in rows if r["method"] == m and r["hd95"] != ""]
    print(f"{folder.name} {protocol} {m:9s} n={len(rs)} SSIM {mean('ssim'):.3f} PSNR {mean('psnr'):.2f} NCC {mean('ncc'):.3f} s/frame {mean('seconds'):.1f} dice {dice} hd95 {np.mean(hd) if hd else float('nan'):.2f}", flush=True)
print("wall", round(time.time() - t0))
