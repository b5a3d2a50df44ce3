"""Dataset layouts -> Study: UK Biobank, M&Ms-2, ACDC, a DICOM folder, or a single NIfTI file.

`read_study(path)` recognises the layout from the file names (DESIGN.md section 3).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError
from cardiorecon.io.nifti import read_nifti, register_input
from cardiorecon.volume import Study, Volume

LAX_VIEWS = ("2ch", "3ch", "4ch")
#: ACDC labels (1 RV, 2 myocardium, 3 LV) -> project labels (1 LV, 2 myocardium, 3 RV).
ACDC_TO_PROJECT = np.array([0, 3, 2, 1], dtype=np.uint8)


def _as_4d(volume: Volume) -> Volume:
    return volume if volume.data.ndim == 4 else volume.with_data(volume.data[..., None])


def _labels(volume: Volume, path: Path) -> Volume:
    data = volume.data
    if np.issubdtype(data.dtype, np.floating):
        if not np.allclose(data, np.round(data)):
            raise InputError(path, "label map has non-integer values")
    data = np.round(data).astype(np.int64)
    if data.min() < 0 or data.max() > 3:
        raise InputError(path, f"label values must be 0..3, found {sorted(np.unique(data).tolist())[:10]}")
    return Volume(data.astype(np.uint8), volume.affine, volume.meta)


def _read_sax(path: Path) -> Volume:
    vol = read_nifti(path, ndim=(3, 4), dtype=np.float32)
    if vol.data.ndim == 3:
        _refuse_3d_cine(path, vol)
    return _as_4d(vol)


def _refuse_3d_cine(path: Path, vol: Volume) -> None:
    """A 3D SAX file is one frame of Z slices. A cine of one slice stored as (X, Y, T) looks the
    same; its header gives it away: a time unit, or a third voxel size that is a frame interval."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        _, time_unit = header.get_xyzt_units()
    except Exception:  # noqa: BLE001 - read_nifti has read this file already; be lenient here
        return
    if int(header["dim"][0]) == 3 and time_unit not in (None, "unknown"):
        raise InputError(path, f"a 3D image with time units ({time_unit}): a cine of one slice (X, Y, T) cannot be a "
                               "SAX stack; store the SAX cine as (X, Y, Z, T)")
    if vol.spatial_shape[2] >= 10 and abs(float(vol.spacing[2]) - 1.0) < 1e-6:
        # 1 is what writers put for an unset voxel size: say how the file was read.
        warnings.warn(f"{path}: 3D image read as one frame of {vol.spatial_shape[2]} slices 1 mm apart; a cine of one "
                      "slice must be stored as (X, Y, 1, T)", GeometryWarning, stacklevel=3)


def read_subject_info(path: Path) -> dict:
    """subject.json: a JSON object; ED/ES frames integers (or null), thicknesses positive numbers."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not a text file") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise InputError(path, f"must hold a JSON object ({{\"ed_frame\": 0, ...}}), got a {type(info).__name__}")
    for key in ("ed_frame", "es_frame"):
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InputError(path, f"{key!r} must be a frame index (an integer >= 0) or null, got {value!r}")
    for key in ("sax_slice_thickness_mm", "lax_slice_thickness_mm"):
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not np.isfinite(value) or value <= 0):
            raise InputError(path, f"{key!r} must be a positive number of mm, got {value!r}")
    return info


def _stack_frames(paths: list[Path], labels: bool = False) -> Volume:
    vols = [read_nifti(p, ndim=(3,)) for p in paths]
    for p, v in zip(paths[1:], vols[1:]):
        if v.shape != vols[0].shape or not np.allclose(v.affine, vols[0].affine, atol=1e-3):
            raise InputError(p, f"shape or affine differs from {paths[0].name}")
    vols = [_labels(v, p) if labels else v for p, v in zip(paths, vols)]
    data = np.stack([v.data for v in vols], axis=-1)
    return Volume(data if labels else data.astype(np.float32), vols[0].affine, {"source": str(paths[0])})


def _read_lax(path: Path, labels: bool = False) -> Volume:
    vol = read_nifti(path, ndim=(2, 3, 4))
    if vol.spatial_shape[2] != 1:
        raise InputError(path, f"a LAX view must be one slice (X, Y, 1[, T]), got shape {vol.shape}")
    vol = _labels(vol, path) if labels else vol.with_data(vol.data.astype(np.float32))
    return _as_4d(vol)


def _expand_labels(labels: Volume, num_frames: int, frames: list[int], path: Path) -> Volume:
    """Place labels of `frames` into a (X, Y, Z, num_frames) map."""
    data = labels.data if labels.data.ndim == 4 else labels.data[..., None]
    if data.shape[3] == num_frames:
        return labels if labels.data.ndim == 4 else labels.with_data(data)
    if data.shape[3] != len(frames):
        raise InputError(path, f"label map has {data.shape[3]} frames; the image has {num_frames}")
    full = np.zeros(data.shape[:3] + (num_frames,), dtype=np.uint8)
    for i, t in enumerate(frames):
        full[..., t] = data[..., i]
    return Volume(full, labels.affine, labels.meta)


def read_ukbb(folder: Path) -> Study:
    """UK Biobank layout: sa.nii.gz, la_{2ch,3ch,4ch}.nii.gz, label_sa/seg_sa, *_ED/*_ES, subject.json."""
    info = {}
    if (folder / "subject.json").is_file():
        try:
            info = json.loads((folder / "subject.json").read_text())
        except json.JSONDecodeError as exc:
            raise InputError(folder / "subject.json", f"invalid JSON ({exc})") from exc
        register_input(folder / "subject.json")
    ed, es = info.get("ed_frame"), info.get("es_frame")
    if (folder / "sa.nii.gz").is_file():
        sax = _read_sax(folder / "sa.nii.gz")
        if ed is None and sax.num_frames > 1:
            ed = 0  # UK Biobank cines are triggered on the R wave: frame 0 is end-diastole
    elif (folder / "sa_ED.nii.gz").is_file() and (folder / "sa_ES.nii.gz").is_file():
        sax = _stack_frames([folder / "sa_ED.nii.gz", folder / "sa_ES.nii.gz"])
        ed, es = 0, 1
    else:
        raise InputError(folder, "UK Biobank layout needs sa.nii.gz (or sa_ED.nii.gz and sa_ES.nii.gz)")

    sax_labels, labelled = None, []
    for stem in ("label_sa", "seg_sa"):
        if (folder / f"{stem}.nii.gz").is_file():
            path = folder / f"{stem}.nii.gz"
            lab = _labels(read_nifti(path, ndim=(3, 4)), path)
            frames = [ed if ed is not None else 0] if lab.data.ndim == 3 else list(range(sax.num_frames))
            sax_labels = _expand_labels(lab, sax.num_frames, frames, path)
            labelled = frames
            break
        if (folder / f"{stem}_ED.nii.gz").is_file() and (folder / f"{stem}_ES.nii.gz").is_file() and ed is not None:
            paths = [folder / f"{stem}_ED.nii.gz", folder / f"{stem}_ES.nii.gz"]
            frames = [ed, es] if es is not None else [ed, 1]
            sax_labels = _expand_labels(_stack_frames(paths, labels=True), sax.num_frames, frames, paths[0])
            labelled = frames
            break
    lax, lax_labels = {}, {}
    for view in LAX_VIEWS:
        if (folder / f"la_{view}.nii.gz").is_file():
            lax[view] = _read_lax(folder / f"la_{view}.nii.gz")
        if (folder / f"label_la_{view}.nii.gz").is_file():
            lax_labels[view] = _read_lax(folder / f"label_la_{view}.nii.gz", labels=True)
    # Slice thickness is not in NIfTI; subject.json (written by the phantom) may say it.
    if "sax_slice_thickness_mm" in info:
        sax.meta["slice_thickness_mm"] = float(info["sax_slice_thickness_mm"])
    for view in lax.values():
        if "lax_slice_thickness_mm" in info:
            view.meta["slice_thickness_mm"] = float(info["lax_slice_thickness_mm"])
    meta = {"source": str(folder), "format": "ukbb", "subject": folder.name, "labelled_frames": labelled}
    if info:
        meta["subject_info"] = info
    return Study(sax, lax, sax_labels, lax_labels, ed, es, meta)


def _match_frame(cine: Volume, frame: Volume) -> int:
    """Index of the cine frame closest to `frame` (for M&Ms-2 ED/ES)."""
    diffs = [float(np.mean((cine.data[..., t] - frame.data) ** 2)) for t in range(cine.num_frames)]
    return int(np.argmin(diffs))


def read_mnms2(folder: Path) -> Study:
    """M&Ms-2 layout: NNN_SA_ED/ES.nii.gz (+_gt), NNN_LA_ED/ES.nii.gz (+_gt), NNN_SA_CINE, NNN_LA_CINE."""
    ed_files = sorted(folder.glob("*_SA_ED.nii.gz"))
    if not ed_files:
        raise InputError(folder, "M&Ms-2 layout needs NNN_SA_ED.nii.gz")
    sid = ed_files[0].name.split("_SA_ED")[0]
    p = lambda s: folder / f"{sid}_{s}.nii.gz"  # noqa: E731
    for required in ("SA_ED", "SA_ES"):
        if not p(required).is_file():
            raise InputError(p(required), "file not found (M&Ms-2 needs SA_ED and SA_ES)")
    if p("SA_CINE").is_file():
        sax = _read_sax(p("SA_CINE"))
        ed = _match_frame(sax, read_nifti(p("SA_ED"), ndim=(3,), dtype=np.float32))
        es = _match_frame(sax, read_nifti(p("SA_ES"), ndim=(3,), dtype=np.float32))
    else:
        sax = _stack_frames([p("SA_ED"), p("SA_ES")])
        ed, es = 0, 1
    sax_labels, labelled = None, []
    if p("SA_ED_gt").is_file() and p("SA_ES_gt").is_file():
        sax_labels = _expand_labels(_stack_frames([p("SA_ED_gt"), p("SA_ES_gt")], labels=True),
                                    sax.num_frames, [ed, es], p("SA_ED_gt"))
        labelled = [ed, es]
    lax, lax_labels = {}, {}
    if p("LA_CINE").is_file():
        lax["4ch"] = _read_lax(p("LA_CINE"))
    elif p("LA_ED").is_file():
        lax["4ch"] = _read_lax(p("LA_ED"))
    if p("LA_ED_gt").is_file():
        lax_labels["4ch"] = _read_lax(p("LA_ED_gt"), labels=True)
    return Study(sax, lax, sax_labels, lax_labels, ed, es,
                 {"source": str(folder), "format": "mnms2", "subject": sid, "labelled_frames": labelled})


def _read_info_cfg(path: Path) -> dict[str, str]:
    out = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (ACDC Info.cfg holds lines such as 'ED: 1')") from None
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    register_input(path)
    return out


def read_acdc(folder: Path) -> Study:
    """ACDC layout: patientNNN_4d.nii.gz, patientNNN_frameNN[_gt].nii.gz, Info.cfg (1-based ED/ES)."""
    cines = sorted(folder.glob("patient*_4d.nii.gz"))
    if not cines:
        raise InputError(folder, "ACDC layout needs patientNNN_4d.nii.gz")
    pid = cines[0].name.split("_4d")[0]
    sax = _read_sax(cines[0])
    ed = es = None
    if (folder / "Info.cfg").is_file():
        cfg = _read_info_cfg(folder / "Info.cfg")
        try:
            ed, es = int(cfg["ED"]) - 1, int(cfg["ES"]) - 1
        except (KeyError, ValueError) as exc:
            raise InputError(folder / "Info.cfg", f"needs integer 'ED:' and 'ES:' lines ({exc})") from exc
    gts = sorted(folder.glob(f"{pid}_frame*_gt.nii.gz"))
    sax_labels, labelled = None, []
    if gts:
        frames = [int(re.search(r"frame(\d+)_gt", g.name).group(1)) - 1 for g in gts]
        stacked = _stack_frames(gts, labels=True)
        stacked = stacked.with_data(ACDC_TO_PROJECT[stacked.data])
        sax_labels = _expand_labels(stacked, sax.num_frames, frames, gts[0])
        labelled = frames
    return Study(sax, {}, sax_labels, {}, ed, es,
                 {"source": str(folder), "format": "acdc", "subject": pid, "labelled_frames": labelled})


def read_study(path: str | Path, with_contours: bool = True) -> Study:
    """Read one subject from any supported layout (recognised from its file names)."""
    from cardiorecon.io.dicom import looks_like_dicom_folder, read_dicom_folder

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.name.endswith((".nii", ".nii.gz")):
            sax = _read_sax(path)
            return Study(sax, meta={"source": str(path), "format": "nifti", "subject": path.name.split(".")[0]})
        raise InputError(path, "expected a subject folder or a .nii/.nii.gz file")
    if (path / "sa.nii.gz").is_file() or (path / "sa_ED.nii.gz").is_file():
        if (path / "subject.json").is_file():
            read_subject_info(path / "subject.json")  # refuse a malformed one with a clear message
        return read_ukbb(path)
    if any(path.glob("*_SA_ED.nii.gz")):
        return read_mnms2(path)
    if any(path.glob("patient*_4d.nii.gz")):
        return read_acdc(path)
    if looks_like_dicom_folder(path):
        from cardiorecon.io.contours import add_sunnybrook_labels, sunnybrook_contour_folder

        study = read_dicom_folder(path)
        study.meta["subject"] = path.name
        contours = sunnybrook_contour_folder(path) if with_contours else None
        if contours is not None:
            add_sunnybrook_labels(study, contours)
            study.meta["labelled_frames"] = sorted({a["frame"] for a in study.meta["annotated"]})
        return study
    raise InputError(path, "not a recognised layout (UK Biobank, M&Ms-2, ACDC, DICOM folder)")
