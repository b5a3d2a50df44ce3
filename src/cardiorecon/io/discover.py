"""Find the studies under the paths a user gives: one subject folder, a folder of them, or a mix.

A folder that `read_study` recognises is one study. A DICOM study may keep each series in its own
subfolder (the biv-me layout: `dicoms/Se1 .. Se11`); a folder of DICOM subjects keeps one subject per
subfolder (Sunnybrook: `SCD0000101/ ...`). The two are told apart by the DICOM headers: subfolders whose
first files share one StudyInstanceUID and PatientID are series of one study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cardiorecon.errors import InputError

NIFTI_MARKERS = ("sa.nii.gz", "sa_ED.nii.gz", "sa.nii", "sa_ED.nii")


@dataclass
class Discovery:
    """Study paths in order, and the paths skipped with the reason."""

    studies: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _has_dicom_file(folder: Path) -> bool:
    """True when `folder` itself (not its subfolders) holds a DICOM file."""
    from cardiorecon.io.dicom import looks_like_dicom_file

    return any(p.is_file() and looks_like_dicom_file(p) for p in folder.iterdir())


def _first_dicom_header(folder: Path):
    import pydicom

    from cardiorecon.io.dicom import looks_like_dicom_file

    for p in sorted(folder.rglob("*")):
        if p.is_file() and looks_like_dicom_file(p):
            try:
                return pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - an unreadable file is the reader's to report
                continue
    return None


def layout_of(path: Path) -> str | None:
    """The layout `read_study` would read `path` as ('nifti', 'ukbb', 'mnms1', 'mnms2', 'acdc', 'acdc-h5', 'dicom'), or None."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".h5" and path.name.startswith("patient"):
            return "acdc-h5"
        return "nifti" if path.name.endswith((".nii", ".nii.gz")) else None
    if not path.is_dir():
        return None
    if any((path / m).is_file() for m in NIFTI_MARKERS):
        return "ukbb"
    if any(path.glob("*_SA_ED.nii.gz")):
        return "mnms2"
    if any(path.glob("patient*_4d.nii.gz")) or any(path.glob("patient*_frame*.nii.gz")):
        return "acdc"
    if any(path.glob("*_sa.nii.gz")):
        return "mnms1"
    if any(path.glob("patient*_frame*.h5")):
        return "acdc-h5"
    if _has_dicom_file(path):
        return "dicom"
    series = [c for c in sorted(path.iterdir()) if c.is_dir() and _has_dicom_file(c)]
    others = [c for c in path.iterdir() if c.is_dir() and c not in series and layout_of(c) is not None]
    if series and not others:
        keys = set()
        for s in series:
            ds = _first_dicom_header(s)
            keys.add(None if ds is None else (str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", ""))))
        if len(keys) == 1 and None not in keys:
            return "dicom"  # series subfolders of one study
    return None


def _through_link(p: Path) -> bool:
    return any(q.is_symlink() for q in (p, *p.parents))


def discover_studies(paths: list[str | Path], max_depth: int = 3) -> Discovery:
    """Expand each path into study paths: a recognised study stays; a folder that is not one is
    searched (down to `max_depth` levels) for studies; a folder in which nothing is recognised is
    reported in `skipped`. A path that does not exist raises InputError.

    A folder reached twice (two paths to one folder, a symlink to a folder already searched, a symlink
    loop) is searched and listed once: the second path is reported in `skipped`, naming the first."""
    found = Discovery()
    seen: dict[Path, Path] = {}  # resolved path -> the path it was first reached by

    def visit(p: Path, depth: int, top: bool) -> bool:
        real = p.resolve()
        if real in seen:
            how = "reached again through a symbolic link" if _through_link(p) else "given twice"
            found.skipped.append((p, f"the same {'folder' if p.is_dir() else 'file'} as {seen[real]} ({how}); "
                                     "used once"))
            return True
        seen[real] = p
        if layout_of(p) is not None:
            found.studies.append(p)
            return True
        if not p.is_dir():
            if top:
                found.skipped.append((p, "not a subject folder or a .nii/.nii.gz file"))
            return False
        hit = False
        if depth < max_depth:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                hit = visit(child, depth + 1, False) or hit
        if not hit and (top or any(c.is_file() and not c.name.startswith(".") for c in p.iterdir())):
            found.skipped.append((p, "not a recognised layout (UK Biobank, M&Ms-1, M&Ms-2, ACDC, DICOM), "
                                     "and no subject folder found inside"))
        return hit

    for p in map(Path, paths):
        if not p.exists():
            raise InputError(p, "no such file or folder")
        visit(p, 0, True)
    return found
