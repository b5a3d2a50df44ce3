"""ACDC as stored in `shared/data/acdc`: HDF5 files without geometry.

Two forms (see the data README): `patientNNN_frameFF.h5` holds a whole SAX stack and
`patientNNN_frameFF_slice_S.h5` one slice each; both hold `image` (float32, scaled to [0, 1] per
volume) and `label` (uint8, ACDC convention 1 RV, 2 myocardium, 3 LV, remapped here to the project's
1 LV, 2 myocardium, 3 RV). frame01 is end-diastole, frame02 end-systole. Arrays are (slices, rows,
cols) as SimpleITK writes them; no affine and no pixel spacing survive (ACDC: 1.37-1.68 mm in-plane,
5-10 mm slices). A training input: a Study read from it is marked `meta["geometry"] = False`, carries
a nominal affine (`nominal_affine`) and must never be reported in millimetres or millilitres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiorecon.errors import InputError
from cardiorecon.volume import Study, Volume

#: ACDC labels (1 RV, 2 myocardium, 3 LV) -> project labels (1 LV, 2 myocardium, 3 RV)
ACDC_TO_PROJECT = np.array([0, 3, 2, 1], dtype=np.uint8)
FRAME_NAMES = {1: "ED", 2: "ES"}
_STACK = re.compile(r"patient(\d+)_frame(\d+)\.h5$")
_SLICE = re.compile(r"patient(\d+)_frame(\d+)_slice_(\d+)\.h5$")


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


def nominal_affine(pixel_mm: float = 1.5, slice_mm: float = 10.0) -> np.ndarray:
    """A stand-in voxel-to-world affine for an HDF5 stack (Z, H, W) read as (H, W, Z): in-plane axes
    whose normal points toward the apex as `segment.canonical_flip` defines it, so the stored slice
    order is what the window networks see (see `canonical_slices`). The sizes are nominal (ACDC's
    real ones are unknown per patient): nothing measured on it is in millimetres of the patient."""
    a = np.eye(4)
    a[:3, 0] = [0.0, pixel_mm, 0.0]
    a[:3, 1] = [pixel_mm, 0.0, 0.0]
    a[:3, 2] = [0.0, 0.0, -slice_mm]
    return a


def read_acdc_h5_study(path: str | Path, patient: int | None = None) -> Study:
    """One patient from the HDF5 form, as a Study WITHOUT geometry: a `patientNNN_frameFF.h5` or
    `patientNNN_frameFF_slice_S.h5` file (that frame), or a folder holding one patient's files (ED and
    ES as frames 0 and 1), or with `patient` that patient's files in a folder of many. The affine is `nominal_affine` (1.5 mm pixels, 10 mm slices, stored
    orientation); `meta["geometry"]` is False: nothing read from it may be turned into mm or mL."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    found = acdc_files(folder)
    if path.is_file():
        m = _STACK.search(path.name) or _SLICE.search(path.name)
        if m is None:
            raise InputError(path, "not an ACDC HDF5 file name (patientNNN_frameFF.h5 or _slice_S.h5)")
        key = (int(m[1]), int(m[2]))
        found = {key: found[key]}
    elif patient is not None:
        found = {k: files for k, files in found.items() if k[0] == patient}
        if not found:
            raise InputError(path, f"no HDF5 file of patient{patient:03d}")
    patients = sorted({p for p, _ in found})
    if len(patients) != 1:
        raise InputError(path, f"holds the HDF5 files of {len(patients)} patients; give one patient's folder or file")
    frames = [read_acdc_frame(files, p, f) for (p, f), files in found.items()]
    shapes = {fr.image.shape for fr in frames}
    if len(shapes) != 1:
        raise InputError(path, f"frames of patient{patients[0]:03d} differ in shape: {sorted(shapes)}")
    affine = nominal_affine()
    image = np.stack([np.moveaxis(fr.image, 0, 2) for fr in frames], -1)  # (H, W, Z, T)
    labels = np.stack([np.moveaxis(fr.labels, 0, 2) for fr in frames], -1)
    src = str(path)
    note = ("ACDC HDF5 copy: no geometry (pixel size and orientation unknown); read on a nominal 1.5 mm grid, "
            "nothing is reported in mm or mL")
    nums = [fr.frame for fr in frames]
    meta = {"source": src, "format": "acdc-h5", "subject": f"patient{patients[0]:03d}", "geometry": False,
            "labelled_frames": list(range(len(frames))), "notes": [note], "acdc_frames": nums}
    sax = Volume(image.astype(np.float32), affine, {"source": src, "geometry": False})
    ed = nums.index(1) if 1 in nums else None
    es = nums.index(2) if 2 in nums else None
    return Study(sax, {}, Volume(labels.astype(np.uint8), affine, {"source": src}), {}, ed, es, meta)
