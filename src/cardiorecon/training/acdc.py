"""The ACDC training set (`shared/data/acdc`, HDF5, no geometry; read by `io.acdc_h5`): the project's
hold-out and the fully labelled real slices the window segmenter trains on.

The project's hold-out (`ACDC_HOLDOUT`): 4 patients of each of the five groups (20 of 80), drawn
once with `numpy.random.default_rng(2025)` from each group's sorted patient numbers; no model of the
project is trained on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardiorecon.io.acdc_h5 import AcdcFrame, acdc_files, read_acdc_h5

#: patient number -> group, by ACDC's numbering (20 per group in the full training set)
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
ACDC_HOLDOUT = (8, 9, 18, 19, 29, 34, 38, 39, 49, 54, 56, 59, 65, 68, 69, 76, 86, 89, 94, 98)


def acdc_group(patient: int) -> str:
    """The ACDC group of a patient number (001-020 DCM, 021-040 HCM, 041-060 MINF, 061-080 NOR, 081-100 RV)."""
    if not 1 <= patient <= 100:
        raise ValueError(f"ACDC training patients are numbered 1-100, got {patient}")
    return ACDC_GROUPS[(patient - 1) // 20]


def acdc_split(folder: str | Path) -> tuple[list[int], list[int]]:
    """(training patients, hold-out patients) present under `folder`."""
    present = sorted({p for p, _ in acdc_files(folder)})
    return [p for p in present if p not in ACDC_HOLDOUT], [p for p in present if p in ACDC_HOLDOUT]


def canonical_slices(frame: AcdcFrame, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) (Z, X, Y) of a frame as the window networks see a scan: each HDF5 slice
    (rows, cols) transposed back to the NIfTI's (X, Y) plane when `transpose`. ACDC's own NIfTI
    affines carry the scanner orientation; the HDF5 copies do not, so the orientation that matches
    `segment.to_canonical` was determined, not assumed: in the phantom's canonical slices (geometry
    known) the turn from the LV->RV direction to the anterior direction is clockwise on every slice
    with both ventricles; in the HDF5 slices as stored, with the descending aorta (posterior, left)
    and the chest wall visible, the same turn is clockwise too, so the stored order is canonical
    and `transpose=False` is what training uses."""
    if transpose:
        return np.ascontiguousarray(frame.image.transpose(0, 2, 1)), np.ascontiguousarray(frame.labels.transpose(0, 2, 1))
    return frame.image, frame.labels


def acdc_real_slices(folder: str | Path, patients: list[int], transpose: bool = False):
    """Every labelled slice of `patients` (ED and ES) as `training.synth.RealSlices` (fully labelled,
    each patient's frames sharing one sampling weight), intensities mapped per frame as
    `segment.normalise_images` maps a scan, taken as 1.5 mm pixels (the real size is unknown; the
    training zoom covers it)."""
    from cardiorecon.segment import normalise_images
    from cardiorecon.training.synth import RealSlices

    if set(patients) & set(ACDC_HOLDOUT):
        raise ValueError(f"hold-out patients asked for training: {sorted(set(patients) & set(ACDC_HOLDOUT))}")
    images, labels, source = [], [], []
    for fr in read_acdc_h5(folder, patients):
        img, lab = canonical_slices(fr, transpose)
        norm = normalise_images(img)
        for z in range(len(img)):
            images.append((norm[z] + 1) / 2)
            labels.append(lab[z])
            source.append(f"patient{fr.patient:03d}")
    known = np.ones((len(images), 4), bool)
    counts = {s: source.count(s) for s in set(source)}
    weight = np.array([1.0 / counts[s] for s in source])
    return RealSlices(images, labels, known, source, weight / weight.sum())


def acdc_prior_bank(folder: str | Path, patients: list[int], spacing_mm: float, size: int,
                    progress: bool = True) -> np.ndarray:
    """Every SAX slice of `patients` (ED and ES) on the diffusion prior's model grid (N, size, size)
    float16 in [-1, 1], prepared exactly as `training.data.study_slices` prepares a scan (the crop
    centred by `preprocess.heart_centre` from the images, never the labels). The HDF5 copies carry no
    pixel size: they are read on `io.acdc_h5.nominal_affine`'s 1.5 mm (ACDC's real ones are
    1.37-1.68 mm), so train with a zoom that covers the difference."""
    from cardiorecon.io.acdc_h5 import read_acdc_h5_study
    from cardiorecon.training.data import study_slices

    if set(patients) & set(ACDC_HOLDOUT):
        raise ValueError(f"hold-out patients asked for training: {sorted(set(patients) & set(ACDC_HOLDOUT))}")
    banks = []
    for i, p in enumerate(patients):
        banks.append(study_slices(read_acdc_h5_study(folder, patient=p), spacing_mm, size).astype(np.float16))
        if progress:
            print(f"  ACDC [{i + 1}/{len(patients)}] patient{p:03d}: {len(banks[-1])} slices", flush=True)
    return np.concatenate(banks)
