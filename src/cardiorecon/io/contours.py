"""Manual and automatic contours of the real data: Sunnybrook contour files -> SAX label maps,
biv-me guide points -> per-slice contour points in world mm (RAS)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiorecon.errors import InputError
from cardiorecon.geometry import LPS_TO_RAS
from cardiorecon.io.nifti import register_input
from cardiorecon.volume import LABELS, Study, Volume

_SUNNYBROOK_NAME = re.compile(r"IM-\d+-(\d+)-(icontour|ocontour)-manual\.txt$")


def read_polygon(path: Path) -> np.ndarray:
    """A Sunnybrook contour file: one 'x y' pixel coordinate per line -> (N, 2)."""
    try:
        pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a contour file of 'x y' lines ({exc})") from exc
    if pts.shape[1] != 2 or len(pts) < 3:
        raise InputError(path, f"a contour needs at least 3 points of 2 coordinates, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InputError(path, "contour coordinates contain NaN")
    return pts


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N, 2), in squared input units."""
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels (i, j) whose centres lie inside the polygon with vertices (x=i, y=j)."""
    from skimage.draw import polygon2mask

    return polygon2mask(shape, points)


def sunnybrook_contour_folder(dicom_folder: Path) -> Path | None:
    """The contour folder of a Sunnybrook DICOM folder, found through `link.csv` beside it."""
    link = dicom_folder.parent / "link.csv"
    if not link.is_file():
        return None
    with open(link, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("patient_id") == dicom_folder.name:
                folder = dicom_folder.parent / "contours" / row["original_id"]
                return folder if folder.is_dir() else None
    return None


def add_sunnybrook_labels(study: Study, contour_folder: str | Path) -> Study:
    """Rasterise Sunnybrook i/o contours onto the SAX grid of `study` (read from DICOM).

    Label 1 inside the endocardial contour, 2 between endocardial and epicardial. Which
    (slice, frame) pairs carry which classes goes to `study.meta['annotated']`; everything
    else in the label map is unknown, not background.
    """
    contour_folder = Path(contour_folder)
    files = study.sax.meta.get("files")
    if files is None:
        raise InputError(contour_folder, "contours need a SAX study read from DICOM (file -> slice map)")
    by_number: dict[int, tuple[int, int]] = {}
    for z, frame_files in enumerate(files):
        for t, f in enumerate(frame_files):
            stem = Path(f).stem
            if stem.isdigit():
                by_number[int(stem)] = (z, t)
    contours: dict[int, dict[str, np.ndarray]] = {}
    paths = sorted(contour_folder.rglob("*-manual.txt"))
    if not paths:
        raise InputError(contour_folder, "no '*-manual.txt' contour files found")
    for path in paths:
        m = _SUNNYBROOK_NAME.search(path.name)
        if not m:
            continue
        number, kind = int(m.group(1)), m.group(2)
        if number not in by_number:
            raise InputError(path, f"refers to image {number}.dcm, which is not in the SAX series")
        contours.setdefault(number, {})[kind] = read_polygon(path)
        register_input(path)

    X, Y, Z, T = study.sax.shape
    labels = np.zeros((X, Y, Z, T), dtype=np.uint8)
    annotated = []
    for number, kinds in sorted(contours.items()):
        z, t = by_number[number]
        classes = []
        if "ocontour" in kinds:
            labels[:, :, z, t][polygon_mask(kinds["ocontour"], (X, Y))] = LABELS["lv_myocardium"]
        if "icontour" in kinds:
            labels[:, :, z, t][polygon_mask(kinds["icontour"], (X, Y))] = LABELS["lv_cavity"]
            classes.append(LABELS["lv_cavity"])
            if "ocontour" in kinds:
                classes.append(LABELS["lv_myocardium"])
        else:  # epicardium alone: the cavity inside it is not delineated
            labels[:, :, z, t][labels[:, :, z, t] == LABELS["lv_myocardium"]] = 0
            continue
        annotated.append({"slice": z, "frame": t, "classes": classes, "image": f"{number}.dcm"})
    study.sax_labels = Volume(labels, study.sax.affine, {"source": str(contour_folder)})
    study.meta["annotated"] = annotated
    # The contours are drawn at ED and ES: the frame with the larger cavity is ED.
    frames = sorted({a["frame"] for a in annotated})
    if len(frames) == 2:
        slices = sorted({a["slice"] for a in annotated if a["frame"] == frames[0]}
                        & {a["slice"] for a in annotated if a["frame"] == frames[1]})
        cavity = [int((labels[:, :, slices, t] == LABELS["lv_cavity"]).sum()) for t in frames]
        study.ed_frame, study.es_frame = (frames[0], frames[1]) if cavity[0] > cavity[1] else (frames[1], frames[0])
    return study


@dataclass
class GuidePoints:
    """biv-me guide points of one frame: contour points (N, 3) in RAS mm by (slice id, type)."""

    frame: int
    contours: dict[tuple[int, str], np.ndarray]
    slice_planes: dict[int, tuple[np.ndarray, np.ndarray]]  # slice id -> (point, unit normal), RAS

    def slice_points(self, slice_id: int) -> dict[str, np.ndarray]:
        return {kind: pts for (sid, kind), pts in self.contours.items() if sid == slice_id}


def read_slice_info(path: str | Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """biv-me SliceInfoFile.txt -> slice id -> (ImagePositionPatient, unit normal), in RAS."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "SliceInfoFile.txt not found")
    planes = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split("\t")
        if not line.strip():
            continue
        try:
            sid = int(f[2])
            ipp = np.array(f[4:7], dtype=float)
            iop = np.array(f[8:14], dtype=float)
        except (IndexError, ValueError) as exc:
            raise InputError(path, f"line {lineno}: cannot parse slice info ({exc})") from exc
        normal = np.cross(iop[:3], iop[3:])
        ras = LPS_TO_RAS[:3, :3]
        planes[sid] = (ras @ ipp, ras @ (normal / np.linalg.norm(normal)))
    return planes


def read_guidepoints(folder: str | Path, frame: int) -> GuidePoints:
    """Read `GPFile_{frame:03d}.txt` of a biv-me guide-point folder (points in LPS -> RAS)."""
    folder = Path(folder)
    path = folder / f"GPFile_{frame:03d}.txt"
    if not path.is_file():
        raise InputError(path, "guide-point file not found")
    contours: dict[tuple[int, str], list[np.ndarray]] = {}
    for lineno, line in enumerate(path.read_text().splitlines()[1:], 2):
        if not line.strip():
            continue
        f = line.split("\t")
        try:
            xyz = np.array(f[:3], dtype=float)
            kind, sid = f[3], int(f[4])
        except (IndexError, ValueError) as exc:
            raise InputError(path, f"line {lineno}: expected 'x y z type frameID weight time' ({exc})") from exc
        if not np.all(np.isfinite(xyz)):
            raise InputError(path, f"line {lineno}: coordinate is NaN")
        contours.setdefault((sid, kind), []).append(LPS_TO_RAS[:3, :3] @ xyz)
    register_input(path)
    planes = read_slice_info(folder / "SliceInfoFile.txt")
    return GuidePoints(frame, {k: np.array(v) for k, v in contours.items()}, planes)
