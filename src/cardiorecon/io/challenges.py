"""Challenge dataset layouts: ACDC (the cine or only its ED/ES extracts, Info.cfg) and M&Ms-1
(CODE_sa.nii.gz with its labels, ED/ES from the dataset's metadata CSV). M&Ms-2 is read with the UK
Biobank-like layouts in `io.layouts`."""

from __future__ import annotations

import re
from pathlib import Path

from cardiorecon.errors import InputError
from cardiorecon.io.acdc_h5 import ACDC_TO_PROJECT
from cardiorecon.io.nifti import read_nifti, register_input
from cardiorecon.io.stack_files import (_as_4d, _check_label_grid, _expand_labels, _labels, _optional_labels,
                                        _read_sax, _stack_frames)
from cardiorecon.volume import Study, Volume


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
    """ACDC layout: `patientNNN_4d.nii.gz` (the cine) and/or its ED/ES extracts
    `patientNNN_frameNN.nii.gz`, labels `patientNNN_frameNN_gt.nii.gz`, `Info.cfg` (1-based ED/ES).

    Without the cine (many copies keep only the labelled frames), the extracts are the SAX stack,
    in frame-number order, and Info.cfg's ED/ES name two of them. A label map on another grid than
    its image, or an Info.cfg frame that does not exist, is an error naming the file."""
    cines = sorted(folder.glob("patient*_4d.nii.gz"))
    extracts = sorted(p for p in folder.glob("patient*_frame*.nii.gz") if not p.name.endswith("_gt.nii.gz"))
    if not cines and not extracts:
        raise InputError(folder, "ACDC layout needs patientNNN_4d.nii.gz or patientNNN_frameNN.nii.gz")
    pid = (cines or extracts)[0].name.split("_")[0]
    frame_no = lambda p: int(re.search(r"frame(\d+)", p.name).group(1))  # noqa: E731  (1-based)
    if cines:
        sax = _read_sax(cines[0])
        numbers = list(range(1, sax.num_frames + 1))  # frame number n is cine index n - 1
    else:
        sax = _stack_frames(extracts)
        numbers = [frame_no(p) for p in extracts]
    ed = es = None
    if (folder / "Info.cfg").is_file():
        cfg = _read_info_cfg(folder / "Info.cfg")
        try:
            ed_no, es_no = int(cfg["ED"]), int(cfg["ES"])
        except (KeyError, ValueError) as exc:
            raise InputError(folder / "Info.cfg", f"needs integer 'ED:' and 'ES:' lines ({exc})") from exc
        for name, n in (("ED", ed_no), ("ES", es_no)):
            if n not in numbers:
                have = f"1..{numbers[-1]}" if cines else ", ".join(str(k) for k in numbers)
                raise InputError(folder / "Info.cfg", f"{name}: {n} names a frame that does not exist (frames {have})")
        ed, es = numbers.index(ed_no), numbers.index(es_no)
    elif not cines:
        ed = 0 if len(numbers) else None  # the first labelled frame of an ACDC patient is ED (frame01)
    gts = sorted(folder.glob(f"{pid}_frame*_gt.nii.gz"))
    sax_labels, labelled = None, []
    if gts:
        stacked = _stack_frames(gts, labels=True)
        _check_label_grid(Volume(stacked.data[..., 0], stacked.affine), Volume(sax.data[..., 0], sax.affine), gts[0])
        stacked = stacked.with_data(ACDC_TO_PROJECT[stacked.data])
        frames = []
        for g in gts:
            n = frame_no(g)
            if n not in numbers:
                raise InputError(g, f"labels frame {n}, which the image does not have")
            frames.append(numbers.index(n))
        sax_labels = _expand_labels(stacked, sax.num_frames, frames, gts[0])
        labelled = frames
    meta = {"source": str(folder), "format": "acdc", "subject": pid, "labelled_frames": labelled}
    if not cines:
        meta["sax_ed_es_only"] = True
        meta["acdc_frames"] = numbers
    return Study(sax, {}, sax_labels, {}, ed, es, meta)


def _mnms_info(folder: Path, code: str) -> tuple[dict | None, Path | None]:
    """The row of subject `code` in the M&Ms metadata CSV (columns 'External code', 'ED', 'ES', ...),
    looked for in the subject folder and up to three folders above it."""
    import csv

    for parent in [folder, *list(folder.parents)[:3]]:
        for path in sorted(parent.glob("*.csv")):
            try:
                with open(path, newline="", encoding="utf-8-sig") as fh:
                    reader = csv.DictReader(fh)
                    if not reader.fieldnames or "External code" not in reader.fieldnames:
                        continue
                    for row in reader:
                        if row.get("External code", "").strip() == code:
                            return row, path
            except (UnicodeDecodeError, csv.Error):
                continue
    return None, None


def read_mnms1(folder: Path) -> Study:
    """M&Ms-1 layout: `CODE_sa.nii.gz` (4D cine) and `CODE_sa_gt.nii.gz` (labels 1 LV, 2 myocardium,
    3 RV at the ED and ES frames, zero elsewhere); ED/ES (0-based frames) from the dataset's
    metadata CSV (a column 'External code' with 'ED' and 'ES') in the folder or up to three above.
    Without it, ED = frame 0 and ES unknown, as for any cine (never guessed from the labels)."""
    cines = sorted(p for p in folder.glob("*_sa.nii.gz"))
    if not cines:
        raise InputError(folder, "M&Ms-1 layout needs CODE_sa.nii.gz")
    code = cines[0].name[: -len("_sa.nii.gz")]
    sax = _read_sax(cines[0])
    row, csv_path = _mnms_info(folder, code)
    ed, es, notes = 0, None, []
    if row is not None:
        try:
            ed, es = int(row["ED"]), int(row["ES"])
        except (KeyError, ValueError) as exc:
            raise InputError(csv_path, f"subject {code}: needs integer ED and ES columns ({exc})") from exc
        for name, t in (("ED", ed), ("ES", es)):
            if not 0 <= t < sax.num_frames:
                raise InputError(csv_path, f"subject {code}: {name} {t} outside the cine's frames 0..{sax.num_frames - 1}")
        register_input(csv_path)
    else:
        notes.append(f"{folder}: no M&Ms metadata CSV with subject {code} found; ED = frame 0, ES unknown")
    problems: list[str] = []
    sax_labels, labelled = None, []
    gt = folder / f"{code}_sa_gt.nii.gz"
    if gt.is_file():
        def build():
            lab = _check_label_grid(_labels(read_nifti(gt, ndim=(3, 4)), gt), sax, gt)
            lab = _as_4d(lab)
            if lab.num_frames != sax.num_frames:
                raise InputError(gt, f"label map has {lab.num_frames} frames; the image has {sax.num_frames}")
            return lab
        sax_labels = _optional_labels(build, gt, problems)
        if sax_labels is not None:
            labelled = [t for t in range(sax.num_frames) if sax_labels.data[..., t].any()]
    meta = {"source": str(folder), "format": "mnms1", "subject": code, "labelled_frames": labelled,
            "label_problems": problems, "notes": notes}
    return Study(sax, {}, sax_labels, {}, ed, es, meta)
