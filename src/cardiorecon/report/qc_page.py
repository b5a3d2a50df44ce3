"""Quality control on the pages: the subject page's findings, the cohort page's table (QC column first,
thumbnails, subjects whose outputs are gone), and the cohort findings that start with how many subjects
need a look."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np

from cardiorecon.report.page import esc, png_uri

#: rows the cohort page's table and findings show at most (the rest are in cohort.csv)
MAX_TABLE_ROWS = 2000

QC_TEXT = {"ok": "ok", "check": "CHECK", "fail": "FAIL"}
QC_ORDER = {"fail": 0, "check": 1, "ok": 2}
THUMB = "thumb.png"


def subject_findings(qc: dict | None) -> tuple[str, list[dict]]:
    """(headline, findings) of a subject page from `QCReport.to_json()`."""
    if not qc:
        return "", []
    status = qc.get("status", "ok")
    score = qc.get("score")
    sc = "" if score is None else f" Predicted quality (segmenter agreement under small perturbations) {score:.2f}."
    if status == "ok":
        return f"Quality control: ok, no rule fired.{sc}", []
    what = "the numbers are not usable as they are" if status == "fail" else "a person should look at this subject"
    reasons = qc.get("reasons") or []
    head = f"Quality control: {QC_TEXT[status]}: {what} ({len(reasons)} reason{'s' if len(reasons) != 1 else ''}).{sc}"
    return head, [{"sentence": r, "verdict": ""} for r in reasons]


def cohort_findings(rows: list[dict]) -> tuple[str, list[dict]]:
    """The cohort headline starts with how many subjects need a look; findings: the commonest reasons."""
    n = len(rows)
    fail = [r for r in rows if r.get("qc") == "fail" or r.get("status") not in ("done", None)]
    check = [r for r in rows if r.get("qc") == "check" and r not in fail]
    look = len(fail) + len(check)
    head = (f"{look} of {n} subject{'s' if n != 1 else ''} need{'s' if look == 1 else ''} a look "
            f"({len(fail)} fail, {len(check)} check); {n - look} passed quality control.")
    counts: Counter = Counter()
    for r in rows:
        for reason in str(r.get("qc_reasons") or "").split("; "):
            if reason:
                counts[_rule_of(reason)] += 1
    findings = [{"sentence": f"{what}: {k} subject{'s' if k != 1 else ''}", "verdict": ""}
                for what, k in counts.most_common(8)]
    return head, findings


def _rule_of(reason: str) -> str:
    """A reason with its numbers replaced by '...', so that subjects with one problem count together."""
    import re

    return re.sub(r"[-+]?\d[\d.,]*", "...", reason)


def thumbnail_png(image: np.ndarray, labels: np.ndarray, size: int = 96) -> bytes:
    """A small PNG of the mid-ventricular slice (X, Y) image with the labels tinted (LV red, myocardium
    green, RV blue): a cohort table's thumbnail (a few kB)."""
    from PIL import Image

    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, [1, 99])
    g = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(g[..., None], 3, -1)
    for value, colour in ((1, (1.0, 0.15, 0.15)), (2, (0.15, 0.8, 0.25)), (3, (0.2, 0.45, 1.0))):
        m = np.asarray(labels) == value
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour)
    pic = Image.fromarray((rgb.transpose(1, 0, 2)[::-1] * 255).astype(np.uint8))  # x right, y up
    pic.thumbnail((size, size))
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_thumbnail(folder: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """thumb.png of a subject: the mid-LV slice of (X, Y, Z) image and labels at one frame."""
    from cardiorecon.io.nifti import atomic_write

    lv = np.argwhere(np.asarray(labels) == 1)
    k = int(np.median(lv[:, 2])) if len(lv) else image.shape[2] // 2
    data = thumbnail_png(image[:, :, k], labels[:, :, k])
    return atomic_write(Path(folder) / THUMB, lambda tmp: Path(tmp).write_bytes(data), suffix=".png")


def subject_links(done: list[dict], out_dir: Path | None) -> list[tuple[str, str]]:
    return [(r["subject"], f"subjects/{r['subject']}/subject.html") for r in done
            if out_dir is None or (Path(out_dir) / "subjects" / r["subject"] / "subject.html").is_file()]


def cohort_table(rows: list[dict], table: dict, out_dir: Path | None) -> dict:
    """The subjects table with QC first (sorted fail, check, ok), a thumbnail and page link, then the
    reasons and the table's other columns. A subject whose outputs are gone says so instead."""

    done = [r for r in rows if r.get("status") == "done"][:MAX_TABLE_ROWS]
    by_name = {r["name"]: r for r in table["rows"]}
    order = sorted(done, key=lambda r: (QC_ORDER.get(str(r.get("qc") or "ok"), 2), r["subject"]))
    cols = [c for c in table["columns"] if c["label"] not in ("qc", "qc_reasons")]
    keep = [i for i, c in enumerate(table["columns"]) if c["label"] not in ("qc", "qc_reasons")]
    new_rows = []
    for r in order:
        name = r["subject"]
        folder = None if out_dir is None else Path(out_dir) / "subjects" / name
        qc = str(r.get("qc") or "")
        if folder is not None and not (folder / "subject.html").is_file():
            subject = {"html": f"{esc(name)}<br><span class='warn'>outputs missing: deleted or moved; run the cohort "
                               "again to make them</span>", "text": name}
        else:
            thumb = "" if folder is None or not (folder / THUMB).is_file() else \
                f"<img src='{png_uri(folder / THUMB)}' alt='mid-ventricular slice of {esc(name)}' width='72'><br>"
            subject = {"html": f"<a href='subjects/{esc(name)}/subject.html'>{thumb}{esc(name)}</a>", "text": name}
        old = by_name.get(name, {"cells": [{"text": ""}] * len(table["columns"])})["cells"]
        new_rows.append({"name": QC_TEXT.get(qc, qc or "?"), "key": QC_ORDER.get(qc, 3),
                         "cells": [subject, {"text": str(r.get("qc_reasons") or ""), "wrap": True}]
                         + [old[i] for i in keep]})
    return {**table, "columns": [{"label": "subject"}, {"label": "QC reasons"}] + cols, "rows": new_rows,
            "first_column": "QC"}


__all__ = ["cohort_findings", "cohort_table", "subject_findings", "subject_links", "thumbnail_png", "write_thumbnail"]
