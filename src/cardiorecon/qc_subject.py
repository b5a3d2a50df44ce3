"""Quality control of one cohort subject: runs the rules of `cardiorecon.qc` on what `cohort.run_subject`
has in hand (the study, the reconstruction, the dense labels, the volume curves) and the segmenter.
Reference labels are never read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cardiorecon import qc


def segmenter(net, affine: np.ndarray):
    """image (X, Y, Z) in [-1, 1] on the grid `affine` -> labels (X, Y, Z), as the cohort segments."""
    from cardiorecon.cine_segmentation import segment_4d

    return lambda image: segment_4d(net, np.asarray(image, np.float32)[..., None], affine=affine)[..., 0]


def subject_qc(study, rec, labels: np.ndarray, curves: dict, fn: dict, frames: Sequence[int], net,
               perturb: bool = True, seg_grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
               ) -> qc.QCReport:
    """The QC report of one subject: input frames, motion, numbers, curves, structures, acquired-slice
    agreement, LAX agreement and (perturb) the predicted-quality score at ED and ES. `seg_grid` = (dense
    image (X, Y, Z', T), its affine, its labels) where the numbers were segmented (the cohort's native grid
    for a whole-field network); default the working grid (`rec.normalised`, `labels`). The acquired-slice
    agreement and the perturbation score are computed there, so that like is compared with like."""
    from cardiorecon.cine_segmentation import segment_4d

    report = qc.QCReport()
    source = Path(str(study.sax.meta.get("source") or "the SAX stack")).name
    sax = np.asarray(study.sax.data)
    sax4 = sax if sax.ndim == 4 else sax[..., None]
    report.add(qc.check_input_frames(sax4[..., list(frames)], frames, source))
    flags, ratio = qc.check_motion(study.sax)
    report.add(flags)
    report.measures["motion_ratio"] = ratio
    # one frame (--frames ed) has no ES: its ESV, SV and EF are undefined by design, not a failure
    one_frame = fn.get("es_index") is None
    report.add(qc.check_function({k: v for k, v in fn.items() if not (one_frame and isinstance(v, float) and np.isnan(v))}))
    report.add(qc.check_curves(curves, frames))
    flags, s = qc.check_structures(labels, frames)
    report.add(flags)
    report.measures["structures"] = s
    # the acquired slices alone, segmented on the same grid (every factor-th dense slice)
    f = int(rec.factor)
    if seg_grid is None:
        seg_grid = (np.asarray(rec.normalised.data), np.asarray(rec.normalised.affine, float), labels)
    else:  # scanner intensities -> [-1, 1] as the segmenter and the perturbations take them
        from cardiorecon.segment import normalise_images

        seg_grid = (normalise_images(np.asarray(seg_grid[0], np.float32)), *seg_grid[1:])
    g_image, g_affine, g_labels = seg_grid
    g_image = g_image if g_image.ndim == 4 else g_image[..., None]
    g_labels = g_labels if g_labels.ndim == 4 else g_labels[..., None]
    acq_affine = np.array(g_affine, float)
    acq_affine[:3, 2] *= f
    acquired = segment_4d(net, np.asarray(g_image, np.float32)[:, :, ::f], affine=acq_affine)
    spacing = np.linalg.norm(np.asarray(g_affine, float)[:3, :3], axis=0).tolist()
    agreement = qc.acquired_agreement(acquired, g_labels, f, spacing)
    report.measures["acquired_vs_dense"] = agreement
    report.add(qc.check_acquired_agreement(agreement, frames))
    idx = sorted({int(fn[k]) for k in ("ed_index", "es_index") if fn.get(k) is not None}) or [0]
    if study.lax:
        ncc = qc.lax_agreement(rec.normalised, study, frames, idx)
        report.measures["lax_ncc"] = ncc
        report.add(qc.check_lax_agreement(ncc))
    if perturb:
        seg = segmenter(net, g_affine)
        scores = [qc.perturbation_agreement(seg, g_image[..., i], g_labels[..., i]) for i in idx]
        report.score = float(np.mean([s["score"] for s in scores]))
        report.measures["perturbation"] = {str(frames[i]): s["per_perturbation"] for i, s in zip(idx, scores)}
        report.add(qc.check_score(report.score))
    return report
