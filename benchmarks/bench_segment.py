"""Benchmark of SAX segmenters on the acquired slices themselves (issue 15), several networks on
the same cases in one run:

- Sunnybrook SCD0000301 (held out of every segmenter's training): Dice LV cavity and LV
  myocardium against the manual contours (pooled over the contoured slices of each frame, and
  the mean 2D Dice of the model card), LV cavity volume at ED and ES on the contoured slices;
- biv-me patient1 (never trained on): mean distance (mm, in-plane) of the SAX guide points (LV
  endo/epi, RV free wall and septum, every frame) to the predicted boundary of their structure;
- phantom subjects with the dense truth (e.g. hf_2000..2009, never trained on): 3D Dice per
  structure of the segmenter on the true image, native grid, ED and ES;
- the ACDC hold-out (`training.acdc.ACDC_HOLDOUT`, 20 patients, 4 per group, never trained on):
  3D Dice and HD95 per structure at ED and ES, per group; HDF5 copies without geometry, so the
  slices are read on a nominal 1.5 mm grid (`training.acdc.nominal_affine`) and HD95 is in nominal
  mm (ACDC pixels are 1.37-1.68 mm: within about 10 % of it); no volume in mL;
- seconds per 3D frame at native resolution.

    python benchmarks/bench_segment.py --weights A --weights B --phantoms DIR... --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cardiorecon.geometry import world_to_voxel
from cardiorecon.io import read_guidepoints, read_study
from cardiorecon.metrics.seg import dice
from cardiorecon.segment import load_segnet, segment_study

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GUIDE_KINDS = {"SAX_LV_ENDOCARDIAL": (1,), "SAX_LV_EPICARDIAL": (1, 2), "SAX_RV_FREEWALL": (3,),
               "SAX_RV_SEPTUM": (3,)}


def native_labels(net, study, frames: list[int]) -> tuple[np.ndarray, float]:
    """Labels (X, Y, Z, T) on the input grid and seconds per frame."""
    t0 = time.perf_counter()
    _, native = segment_study(net, study, frames)
    sec = (time.perf_counter() - t0) / len(frames)
    lab = native.data if native.data.ndim == 4 else native.data[..., None]
    return lab, sec


def sunnybrook(net, folder: Path) -> dict:
    study = read_study(folder)
    ann = study.meta["annotated"]
    frames = sorted({a["frame"] for a in ann})
    lab, sec = native_labels(net, study, frames)
    ref = study.sax_labels.data
    spacing = np.linalg.norm(study.sax.affine[:3, :3], axis=0)
    voxel_ml = float(np.prod(spacing)) / 1000
    out = {"seconds_per_frame": sec, "frames": {}}
    d2 = {1: [], 2: []}
    for t in frames:
        sl = {c: [a["slice"] for a in ann if a["frame"] == t and c in a["classes"]] for c in (1, 2)}
        p = lab[..., frames.index(t)]
        fr = {}
        for c, name in ((1, "lv"), (2, "myo")):
            if not sl[c]:
                continue
            fr[f"dice_{name}"] = dice(p[:, :, sl[c]] == c, ref[:, :, sl[c], t] == c)
            d2[c] += [dice(p[:, :, z] == c, ref[:, :, z, t] == c) for z in sl[c]]
        fr["lv_ml_pred"] = float((p[:, :, sl[1]] == 1).sum() * voxel_ml)
        fr["lv_ml_ref"] = float((ref[:, :, sl[1], t] == 1).sum() * voxel_ml)
        fr["lv_volume_error_pct"] = 100 * (fr["lv_ml_pred"] - fr["lv_ml_ref"]) / fr["lv_ml_ref"]
        fr["slices_lv"], fr["slices_myo"] = sl[1], sl[2]
        out["frames"]["ED" if t == study.ed_frame else "ES" if t == study.es_frame else str(t)] = fr
    for c, name in ((1, "lv"), (2, "myo")):
        # pooled over every contoured (slice, frame)
        pairs = [(a["slice"], a["frame"]) for a in ann if c in a["classes"]]
        pm = np.stack([lab[:, :, z, frames.index(t)] == c for z, t in pairs])
        rm = np.stack([ref[:, :, z, t] == c for z, t in pairs])
        out[f"dice_{name}"] = dice(pm, rm)
        out[f"dice2d_{name}"] = float(np.mean(d2[c]))
        out[f"n_slices_{name}"] = len(pairs)
    return out


def _segments(mask: np.ndarray) -> np.ndarray:
    """Boundary of a 2D mask as line segments (M, 2, 2) in pixel index coordinates (level 0.5)."""
    from skimage.measure import find_contours

    padded = np.pad(mask.astype(float), 1)
    segs = [np.stack([c[:-1], c[1:]], 1) - 1 for c in find_contours(padded, 0.5) if len(c) > 1]
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def _point_segment_distance(p: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Distance of points (N, 2) to the nearest of segments (M, 2, 2) (same units)."""
    a, b = segs[None, :, 0], segs[None, :, 1]
    ab = b - a
    t = np.clip(((p[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p[:, None] - closest, axis=-1).min(1)


def bivme(net, folder: Path) -> dict:
    study = read_study(folder / "dicoms")
    T = study.num_frames
    lab, sec = native_labels(net, study, list(range(T)))
    A = study.sax.affine
    spacing = np.linalg.norm(A[:3, :3], axis=0)
    dists: dict[str, list[float]] = {k: [] for k in GUIDE_KINDS}
    missing: dict[str, int] = {k: 0 for k in GUIDE_KINDS}
    off_plane = 0
    for t in range(T):
        gp = read_guidepoints(folder / "guidepoints", t)
        for (sid, kind), pts in gp.contours.items():
            if kind not in GUIDE_KINDS:
                continue
            ijk = world_to_voxel(A, pts)
            z = int(round(float(np.median(ijk[:, 2]))))
            if not 0 <= z < lab.shape[2] or np.abs(ijk[:, 2] - z).max() > 0.1:
                off_plane += len(pts)
                continue
            mask = np.isin(lab[:, :, z, t], GUIDE_KINDS[kind])
            segs = _segments(mask)
            if not len(segs):
                missing[kind] += len(pts)
                continue
            d = _point_segment_distance(ijk[:, :2] * spacing[:2], segs * spacing[:2])
            dists[kind] += d.tolist()
    out = {"seconds_per_frame": sec, "off_plane_points": off_plane}
    for k, v in dists.items():
        out[k] = {"mean_mm": float(np.mean(v)) if v else None, "median_mm": float(np.median(v)) if v else None,
                  "n": len(v), "points_without_structure": missing[k]}
    allv = sum(dists.values(), [])
    out["all"] = {"mean_mm": float(np.mean(allv)), "n": len(allv), "points_without_structure": sum(missing.values())}
    return out


def acdc_holdout(net, folder: Path, transpose: bool = False) -> dict:
    from cardiorecon.metrics.seg import hd95
    from cardiorecon.segment import basal_rule, segment_slices
    from cardiorecon.io.acdc_h5 import nominal_affine, read_acdc_h5
    from cardiorecon.training.acdc import ACDC_HOLDOUT, acdc_group, canonical_slices

    affine = nominal_affine()
    rows, secs = [], []
    for fr in read_acdc_h5(folder, list(ACDC_HOLDOUT)):
        img, ref = canonical_slices(fr, transpose=transpose)
        t0 = time.perf_counter()
        pred = segment_slices(np.moveaxis(img, 0, 2), affine, net)  # (H, W, Z)
        secs.append(time.perf_counter() - t0)
        ref = np.moveaxis(ref, 0, 2)
        row = {"patient": fr.patient, "group": acdc_group(fr.patient), "phase": fr.phase}
        for c, name in ((1, "lv"), (2, "myo"), (3, "rv")):
            row[f"dice_{name}"] = dice(pred == c, ref == c)
            row[f"hd95_{name}"] = hd95(pred == c, ref == c, (1.5, 1.5, 10.0))
        # the basal-slice rule (segment.basal_rule), measured before it is made a default
        row["dice_lv_basal_rule"] = dice(basal_rule(pred) == 1, ref == 1)
        # LV / RV cavity size relative to the reference (nominal grid: a ratio, not mL)
        for c, name in ((1, "lv"), (3, "rv")):
            n_ref = int((ref == c).sum())
            row[f"{name}_size_error_pct"] = 100 * ((pred == c).sum() - n_ref) / n_ref if n_ref else float("nan")
        row["lv_size_error_pct_basal_rule"] = 100 * ((basal_rule(pred) == 1).sum() - (ref == 1).sum()) / \
            max(int((ref == 1).sum()), 1)
        rows.append(row)
    out = {"rows": rows, "seconds_per_frame": float(np.mean(secs))}
    keys = [k for k in rows[0] if k.startswith(("dice", "hd95", "lv_size", "rv_size"))]
    for sel_name, sel in [("all", lambda r: True), ("ED", lambda r: r["phase"] == "ED"),
                          ("ES", lambda r: r["phase"] == "ES")] + \
            [(g, (lambda g: lambda r: r["group"] == g)(g)) for g in ("DCM", "HCM", "MINF", "NOR", "RV")]:
        sub = [r for r in rows if sel(r)]
        out[sel_name] = {k: float(np.nanmean([r[k] for r in sub])) for k in keys} | {"n_frames": len(sub)}
    return out


def phantom(net, folders: list[Path]) -> dict:
    per = {"lv": [], "myo": [], "rv": []}
    secs = []
    for folder in folders:
        truth = read_study(folder / "truth_sa.nii.gz")
        truth_lab = read_study(folder / "truth_label_sa.nii.gz").sax.data
        info = json.loads((folder / "subject.json").read_text())
        frames = [info["ed_frame"], info["es_frame"]]
        lab, sec = native_labels(net, truth, frames)
        secs.append(sec)
        for i, t in enumerate(frames):
            for c, name in ((1, "lv"), (2, "myo"), (3, "rv")):
                per[name].append(dice(lab[..., i] == c, truth_lab[..., t] == c))
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out["mean"] = float(np.mean([out["lv"], out["myo"], out["rv"]]))
    out["n_frames"] = len(per["lv"])
    out["seconds_per_frame"] = float(np.mean(secs))
    return out


def figure(net, path: Path) -> None:
    """Predicted contours on SCD0000301 (ED, 4 slices; manual contours dashed) and biv-me patient1
    (frame 0, every SAX slice; guide points as dots), whole field of view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sb = read_study(DATA / "sunnybrook" / "SCD0000301")
    bv = read_study(DATA / "bivme_patient1" / "dicoms")
    sb_lab, _ = native_labels(net, sb, [sb.ed_frame])
    bv_lab, _ = native_labels(net, bv, [0])
    gp = read_guidepoints(DATA / "bivme_patient1" / "guidepoints", 0)
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.4))
    colours = {1: "red", 2: "lime", 3: "deepskyblue"}
    sb_slices = [z for z in (1, 3, 5, 7, 8, 9) if z < sb.sax.spatial_shape[2]][:6]
    for ax, z in zip(axes[0], sb_slices):
        ax.imshow(sb.sax.data[:, :, z, sb.ed_frame].T, cmap="gray", origin="lower")
        for c, col in colours.items():
            if (sb_lab[:, :, z, 0] == c).any():
                ax.contour((sb_lab[:, :, z, 0] == c).T, levels=[0.5], colors=col, linewidths=0.8)
            if c < 3 and (sb.sax_labels.data[:, :, z, sb.ed_frame] == c).any():
                ax.contour((sb.sax_labels.data[:, :, z, sb.ed_frame] == c).T, levels=[0.5], colors=col,
                           linewidths=0.8, linestyles="dashed")
        ax.set_title(f"SCD0000301 ED slice {z}", fontsize=8)
        ax.axis("off")
    A = bv.sax.affine
    for ax, z in zip(axes[1], range(bv.sax.spatial_shape[2])):
        ax.imshow(bv.sax.data[:, :, z, 0].T, cmap="gray", origin="lower")
        for c, col in colours.items():
            if (bv_lab[:, :, z, 0] == c).any():
                ax.contour((bv_lab[:, :, z, 0] == c).T, levels=[0.5], colors=col, linewidths=0.8)
        for (sid, kind), pts in gp.contours.items():
            if kind in GUIDE_KINDS:
                ijk = world_to_voxel(A, pts)
                if np.abs(ijk[:, 2] - z).max() < 0.1:
                    ax.plot(ijk[:, 0], ijk[:, 1], ".", ms=2, color={"SAX_LV_ENDOCARDIAL": "orange",
                            "SAX_LV_EPICARDIAL": "yellow", "SAX_RV_FREEWALL": "cyan", "SAX_RV_SEPTUM": "magenta"}[kind])
        ax.set_title(f"biv-me patient1 frame 0 slice {z}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{net.config.name}: predicted LV cavity (red), myocardium (green), RV (blue); "
                 "manual contours dashed; biv-me guide points dotted", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", action="append", required=True, help="weights folder (repeat)")
    ap.add_argument("--phantoms", nargs="*", type=Path, default=[])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", type=Path, help="contour figure of the last network (PNG)")
    ap.add_argument("--skip-real", action="store_true", help="phantoms only")
    ap.add_argument("--acdc", type=Path, default=DATA / "acdc", help="ACDC HDF5 folder (hold-out scored)")
    ap.add_argument("--only-acdc", action="store_true", help="the ACDC hold-out only")
    ap.add_argument("--acdc-transpose", action="store_true", help="ACDC slices transposed (orientation check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    results = {}
    for w in args.weights:
        net = load_segnet(w)
        r = {"config": net.config.name}
        if args.acdc.is_dir():
            r["acdc_holdout"] = acdc_holdout(net, args.acdc, args.acdc_transpose)
            print(w, "ACDC hold-out", json.dumps({k: v for k, v in r["acdc_holdout"].items() if k != "rows"}),
                  flush=True)
        if not args.skip_real and not args.only_acdc:
            r["SCD0000301"] = sunnybrook(net, DATA / "sunnybrook" / "SCD0000301")
            print(w, "SCD0000301", json.dumps({k: v for k, v in r["SCD0000301"].items() if k != "frames"}),
                  flush=True)
            print("   ", json.dumps(r["SCD0000301"]["frames"]), flush=True)
            r["bivme_patient1"] = bivme(net, DATA / "bivme_patient1")
            print(w, "biv-me", json.dumps(r["bivme_patient1"]), flush=True)
        if args.phantoms and not args.only_acdc:
            r["phantom"] = phantom(net, args.phantoms)
            print(w, "phantom", json.dumps(r["phantom"]), flush=True)
        results[str(w)] = r
    args.out.write_text(json.dumps(results, indent=2))
    if args.figure:
        figure(net, args.figure)


if __name__ == "__main__":
    main()
