"""Which registration for the `register` method: SimpleITK demons variants and B-spline against
linear on the dropped middle slices of real slice-drop (ep_preclinical, Sunnybrook SC-HF-I-1),
on the 64 px, 2 mm model grid, two frames each. The table is quoted in recon/register.py.

    flock /tmp/cardiorecon-heavy.lock .venv/bin/python benchmarks/bench_register_choice.py
"""
import numpy as np, time
from cardiorecon.io import read_study
from cardiorecon.evaluate import drop_slices
from cardiorecon.autoencoder import prepare_study
from cardiorecon.geometry import resample
out = {}
for name, path in [("ep", "../shared/data/ep_preclinical"), ("sb1", "../shared/data/sunnybrook/SCD0000101")]:
    t0 = time.time()
    study = read_study(path)
    sub = drop_slices(study, 2)
    grid = prepare_study(sub, 2.0, 64)
    from cardiorecon.geometry import upsampled_affine
    aff = upsampled_affine(grid.image.affine, 2)
    X, Y, Z, T = grid.image.shape
    shape = (X, Y, (Z - 1) * 2 + 1)
    frames = [study.ed_frame or 0, study.es_frame if study.es_frame is not None else study.num_frames//2]
    refs = []
    for t in frames:
        orig = resample(study.sax.frame(t), aff, shape, order=1).data
        refs.append(grid.intensity.forward(orig))
    out[name + "_stack"] = grid.image.data[..., frames]
    out[name + "_ref"] = np.stack(refs, -1)
    print(name, grid.image.shape, frames, time.time() - t0, grid.centre_source)
d = out
import SimpleITK as sitk
from cardiorecon.metrics.image import ssim, psnr


def to_img(a):
    return sitk.GetImageFromArray(np.ascontiguousarray(a.T.astype(np.float32)))

def demons(filt_name, iters, sigma):
    def reg(fixed, moving):
        f = getattr(sitk, filt_name)()
        f.SetNumberOfIterations(iters)
        f.SetStandardDeviations(sigma)
        return f.Execute(to_img(fixed), to_img(moving))
    return reg

def warp(img, field, alpha):
    # field maps fixed -> moving positions; scale by alpha
    arr = sitk.GetArrayFromImage(field) * alpha
    df = sitk.GetImageFromArray(arr, isVector=True)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(df, sitk.sitkVectorFloat64))
    return sitk.GetArrayFromImage(sitk.Resample(to_img(img), to_img(img), tx, sitk.sitkLinear, 0.0)).T

def symmetric_middle(a, b, reg, alpha=0.5):
    # field_ab: for fixed a, where to sample b. New slice at alpha from a: sample a at -alpha * u_ba? use both
    u_ab = reg(a, b)  # displacement: x in a -> x + u in b
    u_ba = reg(b, a)
    # slice at alpha: warp a toward b by alpha: sample a at x + alpha * u_ba (approx), weights
    wa = warp(a, u_ba, alpha)
    wb = warp(b, u_ab, 1 - alpha)
    return (1 - alpha) * wa + alpha * wb

def bspline(fixed, moving):
    F, M = to_img(fixed), to_img(moving)
    tx = sitk.BSplineTransformInitializer(F, [6, 6], order=3)
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMeanSquares()
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=60)
    r.SetInitialTransform(tx, True)
    r.SetShrinkFactorsPerLevel([2, 1]); r.SetSmoothingSigmasPerLevel([1, 0])
    r.SetInterpolator(sitk.sitkLinear)
    out = r.Execute(F, M)
    return sitk.TransformToDisplacementField(out, sitk.sitkVectorFloat64, F.GetSize(), F.GetOrigin(), F.GetSpacing(), F.GetDirection())

methods = {"linear": None,
           "symdemons80_s1.5": demons("SymmetricForcesDemonsRegistrationFilter", 80, 1.5),
           "fastsym80_s1.5": demons("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.5),
           "diffeo80_s1.5": demons("DiffeomorphicDemonsRegistrationFilter", 80, 1.5),
           "symdemons80_s2.5": demons("SymmetricForcesDemonsRegistrationFilter", 80, 2.5),
           "diffeo150_s2": demons("DiffeomorphicDemonsRegistrationFilter", 150, 2.0),
           "bspline6": bspline}

def demons2(name, iters, sigma, upd=0.0, levels=1):
    def reg(fixed, moving):
        F, M = to_img(fixed), to_img(moving)
        field = None
        for lev in reversed(range(levels)):
            s = 2 ** lev
            Fi, Mi = (sitk.Shrink(sitk.SmoothingRecursiveGaussian(F, 0.5*s), [s, s]), sitk.Shrink(sitk.SmoothingRecursiveGaussian(M, 0.5*s), [s, s])) if s > 1 else (F, M)
            f = getattr(sitk, name)()
            f.SetNumberOfIterations(iters); f.SetStandardDeviations(sigma)
            if upd: f.SetSmoothUpdateField(True); f.SetUpdateFieldStandardDeviations(upd)
            if field is None:
                field = f.Execute(Fi, Mi)
            else:
                init = sitk.Resample(field, Fi, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
                field = f.Execute(Fi, Mi, init)
        return field
    return reg
methods.update({"fastsym80_s1.5": demons2("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.5),
           "fastsym80_s1.0": demons2("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.0),
           "fastsym200_s1.5": demons2("FastSymmetricForcesDemonsRegistrationFilter", 200, 1.5),
           "fastsym80_s1.5_u1": demons2("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.5, 1.0),
           "fastsym80_s1.5_L2": demons2("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.5, 0, 2),
           "fastsym80_s1.0_u1_L2": demons2("FastSymmetricForcesDemonsRegistrationFilter", 80, 1.0, 1.0, 2),
           "diffeo80_s1.0_u1_L2": demons2("DiffeomorphicDemonsRegistrationFilter", 80, 1.0, 1.0, 2),
          })

for case in ("ep", "sb1"):
    st, ref = d[case + "_stack"], d[case + "_ref"]
    for m, reg in methods.items():
        ss, ps, tt = [], [], 0
        for f in range(st.shape[-1]):
            s = st[..., f]
            for k in range(s.shape[2] - 1):
                a, b, truth = s[:, :, k], s[:, :, k + 1], ref[:, :, 2 * k + 1, f]
                t0 = time.perf_counter()
                mid = 0.5 * (a + b) if reg is None else symmetric_middle(a, b, reg)
                tt += time.perf_counter() - t0
                ss.append(ssim(mid[..., None], truth[..., None], 2.0)); ps.append(psnr(mid[..., None], truth[..., None], 2.0))
        print(f"{case} {m:18s} SSIM {np.mean(ss):.3f} PSNR {np.mean(ps):.2f}  {tt/len(ss):.3f} s/slice", flush=True)
