"""Breath-hold alignment in the report: the shifts per slice and the intersection agreement before
and after (`cardiorecon.align`), as a figure, a plain table, and a page section."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from cardiorecon.io.nifti import atomic_write


def alignment_table(alignments: dict) -> list[dict]:
    """One row per alignment {(case, views): Alignment | None}: case, views, RMS and largest shift
    (mm), mean intersection NCC before and after, lines, seconds."""
    rows = []
    for (case, views), a in alignments.items():
        if a is None:
            continue
        s = np.asarray(a.sax_shifts_mm)
        rows.append({"case": case, "views": ",".join(views), "lines": len(a.lines),
                     "shift_rms_mm": float(np.sqrt((s ** 2).sum(1).mean())), "max_shift_mm": float(np.abs(s).max()),
                     "ncc_before": a.mean_ncc("before"), "ncc_after": a.mean_ncc("after"), "seconds": a.seconds,
                     "notes": "; ".join(a.notes)})
    return rows


def alignment_figure(alignments: dict, path: str | Path, most: int = 4) -> Path | None:
    """PNG of up to `most` alignments: top, each slice's (d_row, d_col) shift; bottom, each
    intersection line's NCC as acquired against after alignment. None when there is none."""
    items = [(k, a) for k, a in alignments.items() if a is not None and a.lines][:most]
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(items), figsize=(4.2 * len(items), 7), squeeze=False)
    for col, ((case, views), a) in enumerate(items):
        s = np.asarray(a.sax_shifts_mm)
        k = np.arange(len(s))
        ax = axes[0, col]
        ax.axhline(0, color="0.7", lw=0.8)
        ax.plot(k, s[:, 0], "o-", label="d_row")
        ax.plot(k, s[:, 1], "s-", label="d_col")
        ax.set_xlabel("SAX slice")
        ax.set_ylabel("shift (mm)")
        ax.set_title(f"{case}\naligned with {','.join(views)}", fontsize=9)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        before = np.array([x["ncc_before"] for x in a.lines])
        after = np.array([x["ncc_after"] for x in a.lines])
        lo = float(min(before.min(), after.min(), 0.9))
        ax.plot([lo, 1], [lo, 1], color="0.6", lw=0.8)
        for v in views:
            m = np.array([x["view"] == v for x in a.lines])
            if m.any():
                ax.scatter(before[m], after[m], s=14, label=v)
        ax.set_xlabel("line NCC as acquired")
        ax.set_ylabel("line NCC aligned")
        ax.set_title(f"mean {before.mean():.3f} -> {after.mean():.3f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90), suffix=".png")
    plt.close(fig)
    return out


def alignment_section(alignments: dict, figdir: str | Path, study=None) -> list[dict]:
    """The report page's section on breath-hold alignment ([] when nothing was aligned); with the
    first case's `study`, also its intersection lines before and after."""
    rows = alignment_table(alignments)
    if not rows:
        return []
    png = alignment_figure(alignments, Path(figdir) / "alignment.png")
    head = ["case", "views", "lines", "shift RMS (mm)", "largest (mm)", "NCC before", "NCC after", "s"]
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
            r["case"], r["views"], r["lines"], f"{r['shift_rms_mm']:.2f}", f"{r['max_shift_mm']:.2f}",
            f"{r['ncc_before']:.3f}", f"{r['ncc_after']:.3f}", f"{r['seconds']:.1f}")) + "</tr>" for r in rows)
    table = "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body + "</table>"
    section = {"title": "Breath-hold alignment of the SAX slices to the LAX views", "html": table,
               "caption": "Per-slice in-plane shifts estimated from the agreement of the images along every "
                          "SAX-LAX intersection line (all frames), and each line's NCC as acquired and after the "
                          "shifts; with a held-out view, only the guiding views were used."}
    out = [section]
    if png is not None:
        out.append({"title": "Alignment: shifts and intersection agreement", "png": png,
                    "alt": "Per-slice shifts and per-line NCC before against after alignment",
                    "caption": "Top: each SAX slice's shift (d_row, d_col, mm); bottom: each intersection line's NCC "
                               "as acquired (x) against after alignment (y); points above the diagonal improved."})
    fits = [a for (case, views), a in alignments.items() if study is not None and a is not None and a.lines
            and set(views) <= set(study.lax) and len(a.sax_shifts_mm) == study.sax.spatial_shape[2]]
    if fits:
        png = alignment_overlay_figure(study, fits[0], Path(figdir) / "alignment_overlay.png")
        out.append({"title": "Alignment: intersection lines before and after", "png": png,
                    "alt": "Acquired SAX slices with the LAX intersection lines from the headers and after alignment",
                    "caption": "Acquired SAX slices with each LAX view's intersection line where the headers put it "
                               "(dashed) and where the view crosses the acquired image after alignment (solid)."})
    return out


def alignment_overlay_figure(study, alignment, path: str | Path, frame: int = 0, slices: int = 3) -> Path:
    """PNG: a few acquired SAX slices with each LAX view's intersection line where the headers put
    it (dashed) and where the view really crosses the acquired image after alignment (solid: the
    header line moved by minus the slice's shift)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiorecon.geometry import slice_plane
    from cardiorecon.report.overlay import COLOURS, _plane_distance_map, _show

    sax = study.sax
    Z = sax.spatial_shape[2]
    ks = sorted(set(np.linspace(1 if Z > 2 else 0, Z - 2 if Z > 2 else Z - 1, min(slices, Z)).round().astype(int)))
    px = sax.spacing[:2]
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 4.4), squeeze=False)
    for ax, k in zip(axes[0], ks):
        shift = np.asarray(alignment.sax_shifts_mm[k])
        _show(ax, sax.data[:, :, k, frame], f"slice {k}: shift ({shift[0]:+.1f}, {shift[1]:+.1f}) mm")
        X, Y = sax.spatial_shape[:2]
        for v in alignment.lax_views:
            d = _plane_distance_map(sax, k, slice_plane(study.lax[v]))
            colour = COLOURS.get(v, "tab:red")
            ax.contour(d.T, levels=[0.0], colors=colour, linewidths=0.9, linestyles="dashed")
            # The acquired pixel (i, j) shows the anatomy at header (i, j) + shift: the plane crosses the
            # acquired image at header (i, j) - shift / px.
            ax.contour(np.arange(X) - shift[0] / px[0], np.arange(Y) - shift[1] / px[1], d.T, levels=[0.0],
                       colors=colour, linewidths=1.3)
            ax.plot([], [], color=colour, label=v)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("LAX intersection lines on the acquired SAX: header (dashed), after alignment (solid)", fontsize=9)
    fig.tight_layout()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90), suffix=".png")
    plt.close(fig)
    return out
