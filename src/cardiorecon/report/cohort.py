"""Cohort outputs: the volume-curve figure, the subject page and the cohort page (self-contained HTML,
figures embedded as PNG)."""

from __future__ import annotations

import base64
import html
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


def volume_curve_png(times_ms: Sequence[float], curves: dict[str, Sequence[float]], ed: int, es: int,
                     title: str) -> bytes:
    """LV and RV cavity volume (mL) over the cycle, ED and ES marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    t = np.asarray(times_ms, float)
    for key, label, colour in (("lv_ml", "LV cavity", "tab:red"), ("rv_ml", "RV cavity", "tab:blue")):
        ax.plot(t, curves[key], "o-", ms=3, color=colour, label=label)
    for idx, name in ((ed, "ED"), (es, "ES")):
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
        for value, colour in ((1, "red"), (2, "lime"), (3, "deepskyblue")):
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


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
         "td.l,th.l{text-align:left}.failed{color:#b00}")


def _img(data: bytes | None, alt: str) -> str:
    if data is None:
        return ""
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"></p>'


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if np.isfinite(v) else ""
    return html.escape(str(v))


def _table(rows: list[dict], columns: Sequence[str], left: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cls = ' class="failed"' if r.get("status") == "failed" else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{"l" if c in left else ""}">{_cell(r.get(c, ""))}</td>'
                                           for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def write_html(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffix=".html")


def subject_page(subject: str, numbers: dict, curve_png: bytes, slice_png: bytes | None, meshes: list[dict],
                 files: list[str], notes: list[str]) -> str:
    """One subject: the clinical numbers, the volume curves, ED/ES slices, the meshes and the files."""
    keys = ["lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
            "rv_ef", "ed_frame", "es_frame"]
    body = [f"<p>method <b>{html.escape(str(numbers.get('method', '')))}</b>, "
            f"{numbers.get('frames', '')} frame(s), {numbers.get('seconds', 0):.1f} s</p>",
            "<h2>Function</h2>", _table([{k: numbers.get(k, "") for k in keys}], keys),
            "<h2>Volume curves</h2>", _img(curve_png, "volume curves"), "<h2>ED and ES</h2>",
            _img(slice_png, "mid-ventricular slices")]
    if meshes:
        body += ["<h2>Surface meshes</h2>",
                 _table(meshes, ["structure", "phase", "mesh_volume_ml", "voxel_volume_ml", "volume_error_pct",
                                 "watertight", "faces"], left=["structure", "phase"])]
    if notes:
        body += ["<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    body += ["<h2>Files</h2><ul>" + "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>'
                                             for f in files) + "</ul>"]
    return _page(f"cardiorecon cohort: {subject}", "".join(body))


COHORT_DISTRIBUTIONS = (("lv_ef", "LV EF (%)"), ("lv_edv_ml", "LV EDV (mL)"), ("lv_mass_g", "LV mass (g)"),
                        ("rv_ef", "RV EF (%)"), ("seconds", "seconds per subject"))


def cohort_page(rows: list[dict], columns: Sequence[str], title: str, intro: str) -> str:
    """The cohort: counts by status, the distributions of the numbers, and one row per subject."""
    done = [r for r in rows if r.get("status") == "done"]
    failed = [r for r in rows if r.get("status") != "done"]
    body = [f"<p>{html.escape(intro)}</p>",
            f"<p>{len(done)} done, {len(failed)} failed or skipped, {len(rows)} in all.</p>",
            _img(distributions_png(done, COHORT_DISTRIBUTIONS), "distributions")]
    if failed:
        body += ["<h2>Failed or skipped</h2>", _table(failed, ["subject", "status", "error"], left=["subject", "error"])]
    linked = [{**r, "subject": r["subject"]} for r in rows]
    body += ["<h2>Subjects</h2>", _table(linked, [c for c in columns if c not in ("error", "path")],
                                         left=["subject", "status", "method"])]
    return _page(title, "".join(body))


__all__ = ["cohort_page", "distributions_png", "slices_png", "subject_page", "volume_curve_png", "write_html"]
