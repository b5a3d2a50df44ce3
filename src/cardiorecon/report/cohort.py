"""Cohort outputs: the volume-curve figure, the subject page and the cohort page (self-contained HTML,
figures embedded as PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from cardiorecon.io.nifti import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def volume_curve_png(times_ms: Sequence[float], curves: dict[str, Sequence[float]], ed: int | None,
                     es: int | None, title: str) -> bytes:
    """LV and RV cavity volume (mL) over the cycle, ED and ES marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    t = np.asarray(times_ms, float)
    for key, label, colour in (("lv_ml", "LV cavity", "tab:red"), ("rv_ml", "RV cavity", "tab:blue")):
        ax.plot(t, curves[key], "o-", ms=3, color=colour, label=label)
    for idx, name in ((ed, "ED"), (es, "ES")):
        if idx is None:  # one frame: no ES
            continue
        ax.axvline(t[idx], color="0.5", ls="--", lw=0.8)
        ax.text(t[idx], ax.get_ylim()[1], name, ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("time in cycle (ms)")
    ax.set_ylabel("volume (mL)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def slices_png(image: np.ndarray, labels: np.ndarray, frames: dict[str, int]) -> bytes:
    """Mid-ventricular slice of the dense volume at each named frame, label contours over it.
    image, labels: (X, Y, Z, T) on the model grid."""
    plt = _pyplot()
    lv = np.argwhere((labels == 1).any(axis=3))
    k = int(np.median(lv[:, 2])) if len(lv) else image.shape[2] // 2
    fig, axes = plt.subplots(1, len(frames), figsize=(3 * len(frames), 3.2))
    for ax, (name, t) in zip(np.atleast_1d(axes), frames.items()):
        ax.imshow(image[:, :, k, t].T, cmap="gray", origin="lower")
        for value, colour in ((2, "lime"), (3, "deepskyblue"), (1, "red")):  # the cavity drawn last: on top
            m = (labels[:, :, k, t] == value).T
            if m.any():
                ax.contour(m, levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"{name} (frame {t}), slice {k}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def distributions_png(rows: list[dict], columns: Sequence[tuple[str, str]]) -> bytes | None:
    """Histograms of the numeric columns over the subjects that are done."""
    plt = _pyplot()
    values = {c: np.array([float(r[c]) for r in rows if r.get(c) not in (None, "") and np.isfinite(float(r[c]))])
              for c, _ in columns}
    if not any(v.size for v in values.values()):
        return None
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3))
    for ax, (c, label) in zip(np.atleast_1d(axes), columns):
        v = values[c]
        if v.size:
            ax.hist(v, bins=min(20, max(3, v.size)), color="tab:gray", edgecolor="white")
            ax.set_title(f"{label}\nmean {v.mean():.1f}, n={v.size}", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def write_html(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffix=".html")


def _num(v, fmt: str = ".1f") -> dict:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return {"text": str(v) if v not in (None, "") else ""}
    return {"text": format(f, fmt) if np.isfinite(f) else "", "value": f}


def subject_page(subject: str, numbers: dict, curve_png: bytes, slice_png: bytes | None, meshes: list[dict],
                 files: list[str], notes: list[str]) -> str:
    """One subject (report.page.build_page): the clinical numbers, the volume curves, ED/ES slices,
    the meshes, notes and links to every file written."""
    from cardiorecon.report.page import build_page

    n = numbers
    function = {"id": "function", "title": "Function (ED and ES from the LV volume curve)", "first_column": "ventricle",
                "columns": [{"label": c} for c in ("EDV mL", "ESV mL", "SV mL", "EF %", "mass g")],
                "rows": [{"name": v.upper(), "cells": [_num(n.get(f"{v}_edv_ml")), _num(n.get(f"{v}_esv_ml")),
                                                        _num(n.get(f"{v}_sv_ml")), _num(n.get(f"{v}_ef")),
                                                        _num(n.get("lv_mass_g")) if v == "lv" else {"text": ""}]}
                         for v in ("lv", "rv")]}
    tables = [function]
    if meshes:
        tables.append({"id": "meshes", "title": "Surface meshes", "first_column": "mesh",
                       "caption": "Enclosed mesh volume against the voxel volume of the meshed mask "
                                  "(largest component, holes filled).",
                       "columns": [{"label": c} for c in ("mesh mL", "voxel mL", "difference %", "watertight",
                                                          "faces")],
                       "rows": [{"name": f"{m['structure']} {m['phase']}",
                                 "cells": [_num(m["mesh_volume_ml"]), _num(m["voxel_volume_ml"]),
                                           _num(m["volume_error_pct"], "+.2f"),
                                           {"text": "yes" if m["watertight"] else "NO"}, _num(m["faces"], ".0f")]}
                                for m in meshes]})
    sections = [{"title": "Volume curves", "png": curve_png, "alt": "LV and RV cavity volume over the cycle",
                 "caption": "LV and RV cavity volume (mL) of every frame; ED and ES marked. Values in volumes.csv."}]
    if slice_png is not None:
        sections.append({"title": "ED and ES", "png": slice_png, "alt": "mid-ventricular slice at ED and ES",
                         "caption": "Mid-ventricular slice of the dense volume at ED and ES; contours: LV cavity "
                                    "(red), LV myocardium (green), RV cavity (blue)."})
    intro = (f"method {n.get('method', '')}, {n.get('frames', '')} frame(s), ED frame {n.get('ed_frame', '')}, "
             f"ES frame {n.get('es_frame', '')}, {float(n.get('seconds', 0)):.1f} s, device {n.get('device', '')}")
    return build_page(f"cardiorecon cohort: {subject}", intro, tables=tables, sections=sections, notes=notes,
                      links=[(f, f) for f in files])


COHORT_DISTRIBUTIONS = (("lv_ef", "LV EF (%)"), ("lv_edv_ml", "LV EDV (mL)"), ("lv_mass_g", "LV mass (g)"),
                        ("rv_ef", "RV EF (%)"), ("seconds", "seconds per subject"))
#: Subjects listed in the page's table at most (cohort.csv has them all).
MAX_TABLE_ROWS = 2000


def cohort_page(rows: list[dict], columns: Sequence[str], title: str, intro: str) -> str:
    """The cohort (report.page.build_page): counts, failures, distributions, one row per subject."""
    from cardiorecon.report.page import build_page

    done = [r for r in rows if r.get("status") == "done"]
    failures = [{"case": r["subject"], "error": f"{r.get('status')}: {r.get('error', '')}"}
                for r in rows if r.get("status") != "done"]
    shown = [c for c in columns if c not in ("subject", "error", "path", "status")]
    table = {"id": "subjects", "title": "Subjects", "first_column": "subject",
             "columns": [{"label": c} for c in shown],
             "rows": [{"name": r["subject"], "cells": [_num(r.get(c), ".4g") if isinstance(r.get(c), (int, float))
                                                       and not isinstance(r.get(c), bool) else
                                                       {"text": str(r.get(c, ""))} for c in shown]}
                      for r in done[:MAX_TABLE_ROWS]],
             "notes": [f"{len(done) - MAX_TABLE_ROWS} more in cohort.csv"] if len(done) > MAX_TABLE_ROWS else []}
    dist = distributions_png(done, COHORT_DISTRIBUTIONS)
    sections = [] if dist is None else [{"title": "Distributions", "png": dist, "alt": "histograms over the subjects",
                                          "caption": "Over the subjects done."}]
    headline = f"{len(done)} done, {len(failures)} failed or skipped, {len(rows)} in all."
    links = [("cohort.csv", "cohort.csv")] + [(r["subject"], f"subjects/{r['subject']}/subject.html")
                                              for r in done[:MAX_TABLE_ROWS]]
    return build_page(title, intro, headline=headline, failures=failures, tables=[table], sections=sections,
                      links=links)


__all__ = ["cohort_page", "distributions_png", "slices_png", "subject_page", "volume_curve_png", "write_html"]
