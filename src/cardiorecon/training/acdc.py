"""The ACDC training set as stored in `shared/data/acdc` (HDF5, no geometry), for training only.

Two forms (see the data README): `patientNNN_frameFF.h5` holds a whole SAX stack and
`patientNNN_frameFF_slice_S.h5` one slice each; both hold `image` (float32, scaled to [0, 1] per
volume) and `label` (uint8, ACDC convention 1 RV, 2 myocardium, 3 LV, remapped here to the project's
1 LV, 2 myocardium, 3 RV). frame01 is end-diastole, frame02 end-systole. Arrays are (slices, rows,
cols) as SimpleITK writes them, i.e. each slice is the transpose of the NIfTI's (X, Y) plane; no
affine and no pixel spacing survive (ACDC: 1.37-1.68 mm in-plane, 5-10 mm slices), so nothing read
here may be turned into millilitres.

The project's hold-out (`ACDC_HOLDOUT`): 4 patients of each of the five groups (20 of 80), drawn
once with `numpy.random.default_rng(2025)` from each group's sorted patient numbers; no model of the
project is trained on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiorecon.errors import InputError

#: patient number -> group, by ACDC's numbering (20 per group in the full training set)
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
ACDC_HOLDOUT = (8, 9, 18, 19, 29, 34, 38, 39, 49, 54, 56, 59, 65, 68, 69, 76, 86, 89, 94, 98)
#: ACDC labels (1 RV, 2 myocardium, 3 LV) -> project labels (1 LV, 2 myocardium, 3 RV)
ACDC_TO_PROJECT = np.array([0, 3, 2, 1], dtype=np.uint8)
FRAME_NAMES = {1: "ED", 2: "ES"}
_STACK = re.compile(r"patient(\d+)_frame(\d+)\.h5$")
_SLICE = re.compile(r"patient(\d+)_frame(\d+)_slice_(\d+)\.h5$")


def acdc_group(patient: int) -> str:
    """The ACDC group of a patient number (001-020 DCM, 021-040 HCM, 041-060 MINF, 061-080 NOR, 081-100 RV)."""
    if not 1 <= patient <= 100:
        raise ValueError(f"ACDC training patients are numbered 1-100, got {patient}")
    return ACDC_GROUPS[(patient - 1) // 20]


@dataclass(frozen=True)
class AcdcFrame:
    """One labelled ACDC frame: image (Z, H, W) float32 in [0, 1], labels (Z, H, W) uint8 in project
    convention, slices base to apex as stored. No geometry."""

    patient: int
    frame: int  # 1 = ED, 2 = ES
    image: np.ndarray
    labels: np.ndarray

    @property
    def phase(self) -> str:
        return FRAME_NAMES.get(self.frame, f"frame{self.frame:02d}")


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in ("image", "label") if k not in fh]
            if missing:
                raise InputError(path, f"an ACDC HDF5 file needs datasets 'image' and 'label'; "
                                       f"missing {', '.join(missing)}")
            image, label = np.asarray(fh["image"], np.float32), np.asarray(fh["label"])
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({exc})") from None
    if image.shape != label.shape:
        raise InputError(path, f"image {image.shape} and label {label.shape} differ in shape")
    if not np.isfinite(image).all():
        raise InputError(path, "image holds NaN or infinite values")
    bad = np.setdiff1d(np.unique(label), [0, 1, 2, 3])
    if bad.size:
        raise InputError(path, f"labels outside {{0, 1, 2, 3}}: {bad[:5].tolist()}")
    return image, ACDC_TO_PROJECT[label.astype(np.uint8)]


def acdc_files(folder: str | Path) -> dict[tuple[int, int], list[Path]]:
    """(patient, frame) -> its files: one stack file, or the slice files ordered by slice number."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "ACDC HDF5 folder not found")
    stacks, slices = {}, {}
    for p in folder.glob("patient*.h5"):
        if m := _STACK.search(p.name):
            stacks[(int(m[1]), int(m[2]))] = [p]
        elif m := _SLICE.search(p.name):
            slices.setdefault((int(m[1]), int(m[2])), []).append((int(m[3]), p))
    out = dict(stacks)
    for key, items in slices.items():
        if key not in out:
            out[key] = [p for _, p in sorted(items)]
    return dict(sorted(out.items()))


def read_acdc_frame(files: list[Path], patient: int, frame: int) -> AcdcFrame:
    """One frame from its stack file or its slice files (stacked in slice order)."""
    if len(files) == 1 and _STACK.search(files[0].name):
        image, labels = _read_h5(files[0])
        if image.ndim != 3:
            raise InputError(files[0], f"a stack file holds (slices, rows, cols), got shape {image.shape}")
    else:
        pairs = [_read_h5(f) for f in files]
        shapes = {p[0].shape for p in pairs}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InputError(files[0].parent, f"slice files of patient{patient:03d} frame{frame:02d} differ in "
                                              f"shape or are not 2D: {sorted(shapes)}")
        image, labels = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    return AcdcFrame(patient, frame, image, labels)


def read_acdc_h5(folder: str | Path, patients: list[int] | None = None) -> list[AcdcFrame]:
    """Every labelled frame of `patients` (default all) under `folder`, in (patient, frame) order."""
    found = acdc_files(folder)
    if not found:
        raise InputError(folder, "no patientNNN_frameFF[.h5|_slice_S.h5] files")
    wanted = None if patients is None else set(patients)
    return [read_acdc_frame(files, p, f) for (p, f), files in found.items() if wanted is None or p in wanted]


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
