"""`lag --init INIT` on ep_preclinical slice-drop, frame 0 (factor 2, alignment auto, shipped DiffAE,
CPU lag defaults): SSIM / PSNR of the dropped slices, time, loss and LAX agreement (issue 14).

    .venv/bin/python benchmarks/bench_lag_init_quick.py register [fusion] [diffae]
"""
import sys, time, numpy as np, torch
torch.set_num_threads(2)
from cardiorecon.evaluate import drop_slices
from cardiorecon.recon import reconstruct, ReconConfig
from cardiorecon.geometry import resample
from cardiorecon.metrics.image import ssim, psnr
from cardiorecon.models.pretrained import load_diffae
from cardiorecon.io import read_study
study = read_study("../shared/data/ep_preclinical"); sub = drop_slices(study, 2); t = 0
model = load_diffae(None)
for init in sys.argv[1:]:
    t0 = time.perf_counter()
    rec = reconstruct(sub, "lag", factor=2, frames=[t], model=model, config=ReconConfig(lag_init=init), align="auto")
    aff, shape = rec.normalised.affine, rec.normalised.spatial_shape
    ref = rec.grid.intensity.forward(resample(study.sax.frame(t), aff, shape, order=1).data)
    d = rec.normalised.data[..., 0]
    r = rec.lag[t]
    print(f"lag --init {init}: SSIM {ssim(d[:, :, 1::2], ref[:, :, 1::2], 2.0):.3f} PSNR {psnr(d[:, :, 1::2], ref[:, :, 1::2], 2.0):.2f} "
          f"{rec.seconds_per_frame[0]:.1f} s iters {r.iterations} loss {r.history[0]['loss']:.4f}->{min(h['loss'] for h in r.history):.4f} "
          f"lax ncc before {np.mean(list(r.agreement_before.values())):.3f} after {np.mean(list(r.agreement_after.values())):.3f}", flush=True)
