"""Dataset layouts -> Study: UK Biobank, M&Ms-2, ACDC, a DICOM folder, or a single NIfTI file.

`read_study(path)` recognises the layout from the file names (DESIGN.md section 3).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from cardiorecon.errors import GeometryWarning, InputError
from cardiorecon.io.acdc_h5 import read_acdc_h5_study
from cardiorecon.io.challenges import read_acdc, read_mnms1
from cardiorecon.io.nifti import read_nifti, register_input
from cardiorecon.io.stack_files import (_check_label_grid, _expand_labels, _labels, _match_frame,
                                        _optional_labels, _read_lax, _read_sax, _stack_frames)
from cardiorecon.volume import Study, Volume

LAX_VIEWS = ("2ch", "3ch", "4ch")


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


#: Slice thickness (mm) given to a LAX view whose header states an impossible one (M&Ms-2 LA NIfTI
#: files say 1 mm): the usual bSSFP cine LAX slice is 6 to 8 mm (UK Biobank 6 mm; DESIGN.md section 5).
DEFAULT_LAX_THICKNESS_MM = 6.0
#: Thicknesses outside this range (mm) are not those of a cine slice.
PLAUSIBLE_THICKNESS_MM = (2.0, 20.0)


def _read_lax_view(folder: Path, stem: str, sax_ed_es: tuple[int | None, int | None], num_sax: int,
                   labels: bool = False) -> Volume | None:
    """A LAX view (or its labels) from `stem`.nii.gz (cine) and/or `stem`_ED/_ES.nii.gz.

    With a cine and its ED/ES extracts, the extracts locate ED and ES in the cine and pair them with
    SAX ED and ES. With the ED/ES extracts alone, they are a two-frame view paired with SAX ED/ES."""
    from cardiorecon.volume import PAIRING, RULE

    cine, ed_p, es_p = folder / f"{stem}.nii.gz", folder / f"{stem}_ED.nii.gz", folder / f"{stem}_ES.nii.gz"
    has_pair = ed_p.is_file() and es_p.is_file()
    ed, es = sax_ed_es
    if cine.is_file():
        view = _read_lax(cine, labels=labels)
        if has_pair and not labels and ed is not None and es is not None and view.num_frames > 2:
            t_ed, t_es = (_match_frame(view, _read_lax(p).frame(0)) for p in (ed_p, es_p))
            pairing = _pairing_from_ed_es(num_sax, ed, es, t_ed, t_es, view.num_frames)
            view.meta[PAIRING], view.meta[RULE] = pairing, f"the view's own ED/ES files ({ed_p.name}, {es_p.name})"
        return view
    if not has_pair:
        return None
    frames = [_read_lax(p, labels=labels) for p in (ed_p, es_p)]
    for p, v in zip((ed_p, es_p), frames):
        if v.num_frames != 1:
            raise InputError(p, f"an ED or ES extract must be one frame, got shape {v.shape}")
    if frames[1].shape != frames[0].shape or not np.allclose(frames[1].affine, frames[0].affine, atol=1e-3):
        raise InputError(es_p, f"shape or geometry differs from {ed_p.name}")
    view = frames[0].with_data(np.concatenate([f.data for f in frames], axis=3))
    if ed is not None and es is not None:
        view.meta[PAIRING] = _pairing_from_ed_es(num_sax, ed, es, 0, 1, 2)
        view.meta[RULE] = f"the view's own ED/ES files ({ed_p.name}, {es_p.name})"
    return view


def _pairing_from_ed_es(num_sax: int, ed: int, es: int, lax_ed: int, lax_es: int, num_lax: int) -> list[int]:
    """SAX ED -> LAX ED and SAX ES -> LAX ES; other SAX frames by their phase between them (linear in
    the frame index on each of the two arcs of the cycle)."""
    out = []
    for t in range(num_sax):
        if t == ed:
            out.append(lax_ed)
        elif t == es:
            out.append(lax_es)
        elif num_lax == 2:
            out.append(lax_ed if min(abs(t - ed), num_sax - abs(t - ed)) <= min(abs(t - es), num_sax - abs(t - es))
                       else lax_es)
        else:
            # position of t on the arc ED -> ES (systole) or ES -> ED (diastole), mapped onto the LAX arcs
            sys_len, lax_sys = (es - ed) % num_sax, (lax_es - lax_ed) % num_lax
            d = (t - ed) % num_sax
            if d <= sys_len:
                out.append(int(round(lax_ed + d / max(sys_len, 1) * lax_sys)) % num_lax)
            else:
                frac = (d - sys_len) / max(num_sax - sys_len, 1)
                out.append(int(round(lax_es + frac * (num_lax - lax_sys))) % num_lax)
    return out


def read_ukbb(folder: Path, lax_thickness_mm: float | None = None) -> Study:
    """UK Biobank layout, as the ukbb_cardiac pipeline leaves it.

    SAX: `sa.nii.gz` (cine), else `sa_ED.nii.gz` + `sa_ES.nii.gz` (ED and ES only: frames 0 and 1).
    Labels: `label_sa`/`seg_sa` as a cine or one frame, or `label_sa_ED/ES`/`seg_sa_ED/ES`; labels that
    do not fit the image (frames, shape, grid) are left out with a warning naming the file.
    LAX: `la_{2ch,3ch,4ch}.nii.gz` and/or `la_*_ED/ES.nii.gz`, labels `label_la_*` (this project's 0-3).
    `seg_la_*` (the ukbb_cardiac pipeline's atria maps) are left out with a warning naming the file.
    ED/ES: subject.json, else the ED/ES extracts matched in the cine, else ED = frame 0 (the R-wave
    trigger) and ES unknown. Nothing is guessed: an ES that cannot be located stays None."""
    info = read_subject_info(folder / "subject.json") if (folder / "subject.json").is_file() else {}
    if info:
        register_input(folder / "subject.json")
    ed, es = info.get("ed_frame"), info.get("es_frame")
    problems: list[str] = []
    ed_es_only = False
    if (folder / "sa.nii.gz").is_file():
        sax = _read_sax(folder / "sa.nii.gz")
        for key, name in (("ed", "sa_ED.nii.gz"), ("es", "sa_ES.nii.gz")):
            if (folder / name).is_file() and sax.num_frames > 2 and (ed if key == "ed" else es) is None:
                t = _match_frame(sax, read_nifti(folder / name, ndim=(3,), dtype=np.float32))
                ed, es = (t, es) if key == "ed" else (ed, t)
        if ed is None:
            ed = 0  # UK Biobank cines are triggered on the R wave: frame 0 is end-diastole (one frame: its own ED)
    elif (folder / "sa_ED.nii.gz").is_file() and (folder / "sa_ES.nii.gz").is_file():
        sax = _stack_frames([folder / "sa_ED.nii.gz", folder / "sa_ES.nii.gz"])
        ed, es, ed_es_only = 0, 1, True
    else:
        raise InputError(folder, "UK Biobank layout needs sa.nii.gz (or sa_ED.nii.gz and sa_ES.nii.gz)")
    if not 0 <= (ed or 0) < sax.num_frames or (es is not None and not 0 <= es < sax.num_frames):
        raise InputError(folder / "subject.json", f"ED/ES frames ({ed}, {es}) outside the cine's "
                                                  f"0..{sax.num_frames - 1}")

    sax_labels, labelled = None, []
    for stem in ("label_sa", "seg_sa"):
        path = folder / f"{stem}.nii.gz"
        pair = [folder / f"{stem}_ED.nii.gz", folder / f"{stem}_ES.nii.gz"]
        candidates = []
        if path.is_file():
            candidates.append(("cine", path))
        if all(p.is_file() for p in pair):
            candidates.append(("pair", pair[0]))
        for kind, where in candidates:
            if kind == "cine":
                def build(path=path):
                    lab = _check_label_grid(_labels(read_nifti(path, ndim=(3, 4)), path), sax, path)
                    if lab.data.ndim == 3 or lab.num_frames == 1:
                        if ed is None:
                            raise InputError(path, "one-frame label map, but the ED frame is unknown")
                        return _expand_labels(lab, sax.num_frames, [ed], path), [ed]
                    if lab.num_frames != sax.num_frames:
                        raise InputError(path, f"label map has {lab.num_frames} frames; the image has {sax.num_frames}")
                    return lab, list(range(sax.num_frames))
            else:
                def build(pair=pair):
                    if ed is None or es is None:
                        raise InputError(pair[1], "ED/ES label maps, but the cine's ES frame is unknown "
                                                  "(give sa_ES.nii.gz or es_frame in subject.json)")
                    lab = _check_label_grid(_stack_frames(pair, labels=True), sax, pair[0])
                    return _expand_labels(lab, sax.num_frames, [ed, es], pair[0]), [ed, es]
            got = _optional_labels(build, where, problems)
            if got is not None:
                sax_labels, labelled = got
                break
        if sax_labels is not None:
            break

    lax, lax_labels = {}, {}
    for view in LAX_VIEWS:
        v = _read_lax_view(folder, f"la_{view}", (ed, es), sax.num_frames)
        if v is not None:
            lax[view] = v
        for stem in (f"label_la_{view}", f"seg_la_{view}"):
            if view in lax_labels or view not in lax:
                continue
            if stem.startswith("seg_la_"):
                found = [q for q in (folder / f"{stem}.nii.gz", folder / f"{stem}_ED.nii.gz") if q.is_file()]
                if found:  # the ukbb_cardiac pipeline's LAX maps are atria, not LV / myocardium / RV
                    msg = (f"{found[0]}: UK Biobank LAX label map of the atria (ukbb_cardiac: seg_la_2ch 1 = left "
                           "atrium; seg_la_4ch 1 = left, 2 = right atrium), not LV cavity / myocardium / RV: not "
                           "used (never scored as LV/Myo/RV)")
                    warnings.warn(msg)
                    problems.append(msg)
                continue
            lab = _optional_labels(lambda stem=stem: _read_lax_view(folder, stem, (ed, es), sax.num_frames,
                                                                   labels=True), folder / f"{stem}.nii.gz", problems)
            if lab is not None:
                if lab.shape[:3] != lax[view].shape[:3] or lab.num_frames not in (1, lax[view].num_frames):
                    msg = (f"{folder / stem}: LAX label map shape {lab.shape} does not match the view "
                           f"{lax[view].shape}; the study is read without these labels")
                    warnings.warn(msg)
                    problems.append(msg)
                    continue
                lax_labels[view] = lab
    # Slice thickness is not in NIfTI; subject.json (written by the phantom) may say it.
    if "sax_slice_thickness_mm" in info:
        sax.meta["slice_thickness_mm"] = float(info["sax_slice_thickness_mm"])
    for v in lax.values():
        if "lax_slice_thickness_mm" in info:
            v.meta["slice_thickness_mm"] = float(info["lax_slice_thickness_mm"])
    meta = {"source": str(folder), "format": "ukbb", "subject": folder.name, "labelled_frames": labelled,
            "sax_ed_es_only": ed_es_only, "label_problems": problems}
    if info:
        meta["subject_info"] = info
    return Study(sax, lax, sax_labels, lax_labels, ed, es, meta)


def read_mnms2(folder: Path, lax_thickness_mm: float | None = None) -> Study:
    """M&Ms-2 layout: NNN_SA_ED/ES.nii.gz (+_gt), NNN_LA_ED/ES.nii.gz (+_gt), NNN_SA_CINE, NNN_LA_CINE."""
    ed_files = sorted(folder.glob("*_SA_ED.nii.gz"))
    if not ed_files:
        raise InputError(folder, "M&Ms-2 layout needs NNN_SA_ED.nii.gz")
    sid = ed_files[0].name.split("_SA_ED")[0]
    p = lambda s: folder / f"{sid}_{s}.nii.gz"  # noqa: E731
    for required in ("SA_ED", "SA_ES"):
        if not p(required).is_file():
            raise InputError(p(required), "file not found (M&Ms-2 needs SA_ED and SA_ES)")
    ed_es_only = False
    if p("SA_CINE").is_file():
        sax = _read_sax(p("SA_CINE"))
        ed = _match_frame(sax, read_nifti(p("SA_ED"), ndim=(3,), dtype=np.float32))
        es = _match_frame(sax, read_nifti(p("SA_ES"), ndim=(3,), dtype=np.float32))
    else:
        sax = _stack_frames([p("SA_ED"), p("SA_ES")])
        ed, es, ed_es_only = 0, 1, True
    problems: list[str] = []
    sax_labels, labelled = None, []
    if p("SA_ED_gt").is_file() and p("SA_ES_gt").is_file():
        def build():
            lab = _check_label_grid(_stack_frames([p("SA_ED_gt"), p("SA_ES_gt")], labels=True), sax, p("SA_ED_gt"))
            return _expand_labels(lab, sax.num_frames, [ed, es], p("SA_ED_gt"))
        sax_labels = _optional_labels(build, p("SA_ED_gt"), problems)
        labelled = [ed, es] if sax_labels is not None else []
    lax, lax_labels = {}, {}
    v = _read_lax_view(folder, f"{sid}_LA_CINE", (ed, es), sax.num_frames) if p("LA_CINE").is_file() else None
    if v is None and p("LA_ED").is_file() and p("LA_ES").is_file():
        v = _read_lax_view(folder, f"{sid}_LA", (ed, es), sax.num_frames)
    elif v is None and p("LA_ED").is_file():
        v = _read_lax(p("LA_ED"))
    if v is not None:
        lax["4ch"] = v
        if p("LA_ED_gt").is_file() and p("LA_ES_gt").is_file() and v.num_frames == 2:
            lab = _optional_labels(lambda: _stack_lax_labels([p("LA_ED_gt"), p("LA_ES_gt")], v), p("LA_ED_gt"),
                                   problems)
            if lab is not None:
                lax_labels["4ch"] = lab
        elif p("LA_ED_gt").is_file() and v.num_frames == 1:
            lab = _optional_labels(lambda: _stack_lax_labels([p("LA_ED_gt")], v), p("LA_ED_gt"), problems)
            if lab is not None:
                lax_labels["4ch"] = lab
    return Study(sax, lax, sax_labels, lax_labels, ed, es,
                 {"source": str(folder), "format": "mnms2", "subject": sid, "labelled_frames": labelled,
                  "sax_ed_es_only": ed_es_only, "label_problems": problems})


def _stack_lax_labels(paths: list[Path], view: Volume) -> Volume:
    frames = [_read_lax(q, labels=True) for q in paths]
    for q, f in zip(paths, frames):
        if f.spatial_shape != view.spatial_shape or not np.allclose(f.affine, view.affine, atol=1e-3):
            raise InputError(q, f"LAX label map shape {f.shape} or geometry does not match the view {view.shape}")
    return frames[0].with_data(np.concatenate([f.data for f in frames], axis=3))


def check_lax_thickness(study: Study, override_mm: float | None = None) -> None:
    """Give every LAX view a usable slice thickness in place: `override_mm` when set; else a header
    value outside 2-20 mm (not a cine slice: M&Ms-2 LA files say 1 mm) becomes
    DEFAULT_LAX_THICKNESS_MM with a warning naming the file."""
    for name, view in study.lax.items():
        if override_mm is not None:
            view.meta["slice_thickness_mm"] = float(override_mm)
            continue
        t = view.slice_thickness
        lo, hi = PLAUSIBLE_THICKNESS_MM
        if not lo <= t <= hi:
            msg = (f"{view.meta.get('source', name)}: LAX view {name!r} slice thickness {t:g} mm is not that of a "
                   f"cine slice; using {DEFAULT_LAX_THICKNESS_MM:g} mm (override with --lax-thickness)")
            warnings.warn(msg, GeometryWarning, stacklevel=2)
            study.meta.setdefault("notes", []).append(msg)
            view.meta["slice_thickness_mm"] = DEFAULT_LAX_THICKNESS_MM


def read_study(path: str | Path, with_contours: bool = True, lax_thickness_mm: float | None = None) -> Study:
    """Read one subject from any supported layout (recognised from its file names).

    Every LAX view gets a usable slice thickness (`check_lax_thickness`; `lax_thickness_mm`
    overrides). The SAX -> LAX frame pairing by cardiac phase is the plan's (`cardiorecon.plan`),
    except where the view's own ED/ES files give it."""
    study = _read_layout(path, with_contours)
    if lax_thickness_mm is not None and not (np.isfinite(lax_thickness_mm) and lax_thickness_mm > 0):
        raise InputError(path, f"--lax-thickness must be a positive number of mm, got {lax_thickness_mm}")
    check_lax_thickness(study, lax_thickness_mm)
    return study


def _read_layout(path: str | Path, with_contours: bool = True) -> Study:
    from cardiorecon.io.dicom import looks_like_dicom_folder, read_dicom_folder

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix == ".h5":
            return read_acdc_h5_study(path)
        if path.name.endswith((".nii", ".nii.gz")):
            sax = _read_sax(path)
            return Study(sax, meta={"source": str(path), "format": "nifti", "subject": path.name.split(".")[0]})
        raise InputError(path, "expected a subject folder, a .nii/.nii.gz file or an ACDC .h5 file")
    if (path / "sa.nii.gz").is_file() or (path / "sa_ED.nii.gz").is_file():
        if (path / "subject.json").is_file():
            read_subject_info(path / "subject.json")  # refuse a malformed one with a clear message
        return read_ukbb(path)
    if any(path.glob("*_SA_ED.nii.gz")):
        return read_mnms2(path)
    if any(path.glob("patient*_4d.nii.gz")) or any(path.glob("patient*_frame*.nii.gz")):
        return read_acdc(path)
    if any(path.glob("*_sa.nii.gz")):
        return read_mnms1(path)
    if any(path.glob("patient*_frame*.h5")):
        return read_acdc_h5_study(path)
    if looks_like_dicom_folder(path):
        from cardiorecon.io.contours import add_sunnybrook_labels, sunnybrook_contour_folder

        study = read_dicom_folder(path)
        study.meta["subject"] = path.name
        contours = sunnybrook_contour_folder(path) if with_contours else None
        if contours is not None:
            add_sunnybrook_labels(study, contours)
            study.meta["labelled_frames"] = sorted({a["frame"] for a in study.meta["annotated"]})
        return study
    raise InputError(path, "not a recognised layout (UK Biobank, M&Ms-1, M&Ms-2, ACDC, DICOM folder)")
