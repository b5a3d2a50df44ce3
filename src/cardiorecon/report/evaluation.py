"""Evaluation outputs: the CSV (one row per case, method, frame and structure), the summary table
(mean +- std per method, Markdown), the figures (PNG) and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

import numpy as np

from cardiorecon.evaluate import COLUMNS, TRUTH_IMAGE
from cardiorecon.io.nifti import atomic_write
from cardiorecon.metrics.seg import STRUCTURES

SHORT = {"lv_cavity": "LV", "lv_myocardium": "Myo", "rv_cavity": "RV"}


def write_csv(rows: list[dict], path: Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    return atomic_write(path, write, suffix=".csv")


def read_csv(paths: list[Path]) -> list[dict]:
    """Rows of one or more results.csv files (numbers back as floats, empty cells as '')."""
    rows = []
    for path in paths:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != COLUMNS:
                from cardiorecon.errors import InputError

                raise InputError(path, f"not a cardiorecon results.csv (columns {reader.fieldnames})")
            for r in reader:
                for k in COLUMNS[5:-1]:
                    r[k] = float(r[k]) if r[k] != "" else ""
                rows.append(r)
    return rows


def _values(rows, method, column, structure=None, prefix=None) -> np.ndarray:
    out = []
    for r in rows:
        if r["method"] != method or r[column] == "" or r[column] is None:
            continue
        s = r["structure"]
        if structure is not None and s != structure:
            continue
        if prefix is not None and not s.startswith(prefix):
            continue
        v = float(r[column])
        if np.isfinite(v):
            out.append(v)
    return np.asarray(out)


def _columns(protocol: str, rows: list[dict]) -> list[tuple[str, str, dict]]:
    """(header, column, filter) of the summary table of one protocol."""
    cols: list[tuple[str, str, dict]] = [("SSIM", "ssim", {"structure": "image"}), ("PSNR dB", "psnr", {"structure": "image"})]
    if protocol == "lax-holdout":
        cols = [("LAX NCC", "ncc", {"prefix": "lax_"}), ("LAX SSIM", "ssim", {"prefix": "lax_"})]
    elif any(r["structure"] == "image" and r["ncc"] != "" for r in rows):
        cols.append(("LAX NCC", "ncc", {"structure": "image"}))
    present = {r["structure"].split("@")[0] for r in rows if r["dice"] != ""}
    structs = [s for s in STRUCTURES if s in present]
    for metric, label in (("dice", "Dice"), ("hd95", "HD95 mm")):
        for s in structs:
            cols.append((f"{label} {SHORT[s]}", metric, {"prefix": s}))
        if len(structs) > 1:
            cols.append((f"{label} mean", metric, {"structures": structs}))
    if any(r["ef_error"] != "" for r in rows):
        cols += [("|dEF| LV %", "ef_error", {"structure": "lv"}), ("|dEF| RV %", "ef_error", {"structure": "rv"})]
    cols += [("s/frame", "seconds", {"structure": "image" if protocol != "lax-holdout" else None,
                                      "prefix": "lax_" if protocol == "lax-holdout" else None}),
             ("peak MB", "peak_mb", {"structure": "image" if protocol != "lax-holdout" else None,
                                     "prefix": "lax_" if protocol == "lax-holdout" else None})]
    return cols


def _stat(rows, method, column, flt) -> tuple[float, float, int]:
    if "structures" in flt:
        v = np.concatenate([_values(rows, method, column, prefix=s) for s in flt["structures"]])
    else:
        v = _values(rows, method, column, flt.get("structure"), flt.get("prefix"))
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (float("nan"), float("nan"), 0)


def summary(rows: list[dict]) -> dict[str, dict]:
    """{protocol: {"headers": [...], "methods": [...], "cells": {method: [(mean, std, n)]}}}"""
    out = {}
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        pr = [r for r in rows if r["protocol"] == protocol]
        methods = list(dict.fromkeys(r["method"] for r in pr if r["method"] != TRUTH_IMAGE))
        if any(r["method"] == TRUTH_IMAGE for r in pr):
            methods.append(TRUTH_IMAGE)
        cols = _columns(protocol, pr)
        out[protocol] = {"headers": [c[0] for c in cols], "methods": methods,
                         "cases": len({r["case"] for r in pr}),
                         "cells": {m: [_stat(pr, m, c, f) for _, c, f in cols] for m in methods}}
    return out


def _fmt(mean: float, std: float, n: int, header: str) -> str:
    if n == 0 or not np.isfinite(mean):
        return "-"
    digits = 3 if header.split()[0] in ("SSIM", "Dice", "LAX") else (0 if header == "peak MB" else 2)
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown(summ: dict[str, dict]) -> str:
    parts = []
    for protocol, s in summ.items():
        parts.append(f"### {protocol} ({s['cases']} case(s))\n")
        parts.append("| method | " + " | ".join(s["headers"]) + " |")
        parts.append("|---|" + "---|" * len(s["headers"]))
        for m in s["methods"]:
            cells = [_fmt(*c, h) for c, h in zip(s["cells"][m], s["headers"])]
            parts.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("")
    parts.append(f"mean +- std over cases and frames; `{TRUTH_IMAGE}`: the segmentation network on the true "
                 "dense image (its own error, no reconstruction); HD95 in mm; EF error in EF percentage points.")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------ figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")
    plt.close(fig)
    return out


def montage_figure(fig_data: dict, methods: list[str], path: Path, max_slices: int = 6) -> Path | None:
    if not fig_data:
        return None
    plt = _plt()
    new = fig_data["new"]
    picks = [new[int(i)] for i in np.linspace(0, len(new) - 1, min(max_slices, len(new)))]
    names = ["truth"] + [m for m in methods if m in fig_data]
    fig, axes = plt.subplots(len(names), len(picks), figsize=(1.6 * len(picks), 1.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        img = fig_data["truth"] if name == "truth" else fig_data[name][0]
        lab = fig_data.get("truth_labels") if name == "truth" else fig_data[name][1]
        for c, z in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(img[:, :, z].T, cmap="gray", vmin=-1, vmax=1, origin="lower")
            if lab is not None:
                ax.contour(lab[:, :, z].T, levels=[0.5, 1.5, 2.5], colors=["r", "y", "c"], linewidths=0.6,
                           origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"slice {z}", fontsize=8)
    fig.suptitle(f"{fig_data['case']} frame {fig_data['frame']}: new slices (contours: segmentation)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def lax_overlay_figure(fig_data: dict, methods: list[str], path: Path) -> Path | None:
    """Each LAX view (rows) with, per method, the reconstruction sampled on its plane blended in
    inside the region where the plane crosses the SAX stack, and the sampled segmentation."""
    if not fig_data:
        return None
    plt = _plt()
    views = list(dict.fromkeys(v for v, _ in fig_data))
    ms = [m for m in methods if any((v, m) in fig_data for v in views)]
    fig, axes = plt.subplots(len(views), len(ms) + 1, figsize=(2.0 * (len(ms) + 1), 2.0 * len(views)), squeeze=False)
    for r, v in enumerate(views):
        image = next(fig_data[(v, m)][0] for m in ms if (v, m) in fig_data)
        lo, hi = np.percentile(image, [1, 99])
        axes[r, 0].imshow(image.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        axes[r, 0].set_ylabel(v, fontsize=8)
        if r == 0:
            axes[r, 0].set_title("LAX image", fontsize=8)
        for c, m in enumerate(ms, start=1):
            ax = axes[r, c]
            if (v, m) not in fig_data:
                ax.axis("off")
                continue
            _, sampled, valid, plab = fig_data[(v, m)]
            x = sampled.astype(np.float64)
            if valid.sum() > 2:  # intensity-match the sampled plane to the LAX image inside the mask
                A = np.stack([x[valid], np.ones(valid.sum())], 1)
                coef, *_ = np.linalg.lstsq(A, image[valid].astype(np.float64), rcond=None)
                x = x * coef[0] + coef[1]
            shown = np.where(valid, x, image * 0.5 + lo * 0.5)
            ax.imshow(shown.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.contour(valid.T.astype(float), levels=[0.5], colors=["lime"], linewidths=0.5, origin="lower")
            if plab is not None:
                ax.contour(np.where(valid, plab, 0).T, levels=[0.5, 1.5, 2.5], colors=["r", "y", "c"],
                           linewidths=0.5, origin="lower")
            if r == 0:
                ax.set_title(m, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("LAX views with the reconstruction on their plane (green: where the plane crosses the stack)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def box_figure(rows: list[dict], methods: list[str], path: Path) -> Path | None:
    structs = [s for s in STRUCTURES if any(r["structure"].split("@")[0] == s and r["dice"] != "" for r in rows)]
    if not structs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(structs), figsize=(3.2 * len(structs), 5.5), squeeze=False)
    for c, s in enumerate(structs):
        for r, metric in enumerate(("dice", "hd95")):
            ms = [m for m in methods if len(_values(rows, m, metric, prefix=s))]
            data = [_values(rows, m, metric, prefix=s) for m in ms]
            ax = axes[r, c]
            if data:
                ax.boxplot(data, tick_labels=ms)
            ax.set_title(f"{SHORT[s]} {'Dice' if metric == 'dice' else 'HD95 (mm)'}", fontsize=9)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def ef_figure(rows: list[dict], methods: list[str], path: Path) -> Path | None:
    pts = [r for r in rows if r["structure"] in ("lv", "rv") and r["ef"] != "" and r["true_ef"] != ""]
    if not pts:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, s in zip(axes, ("lv", "rv")):
        for m in methods:
            p = [r for r in pts if r["method"] == m and r["structure"] == s]
            if p:
                ax.scatter([float(r["true_ef"]) for r in p], [float(r["ef"]) for r in p], label=m, s=18)
        lim = [0, 100]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel("true EF (%)")
        ax.set_ylabel("EF from reconstruction (%)")
        ax.set_title(f"{s.upper()} ejection fraction")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _img_tag(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def html_page(summ: dict, figures: list[tuple[str, Path]], title: str, intro: str, csv_name: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
             "td:first-child{text-align:left}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    for protocol, s in summ.items():
        parts.append(f"<h2>{html.escape(protocol)} ({s['cases']} case(s))</h2><table><tr><th>method</th>")
        parts += [f"<th>{html.escape(h)}</th>" for h in s["headers"]]
        parts.append("</tr>")
        for m in s["methods"]:
            cells = "".join(f"<td>{html.escape(_fmt(*c, h))}</td>" for c, h in zip(s["cells"][m], s["headers"]))
            parts.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append(f"<p>mean &plusmn; std over cases and frames. Every row: <code>{html.escape(csv_name)}</code>. "
                 f"<code>{TRUTH_IMAGE}</code>: the segmentation network on the true dense image.</p>")
    for caption, path in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>{_img_tag(path)}")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(rows: list[dict], figures_data: dict, methods: list[str], out: Path, title: str, intro: str
                 ) -> dict[str, Path]:
    """Write results.csv, summary.md, figures/*.png and report.html under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    all_methods = methods + ([TRUTH_IMAGE] if any(r["method"] == TRUTH_IMAGE for r in rows) else [])
    written = {"csv": write_csv(rows, out / "results.csv")}
    summ = summary(rows)
    md = f"# {title}\n\n{intro}\n\n" + markdown(summ)
    written["markdown"] = atomic_write(out / "summary.md", lambda tmp: tmp.write_text(md), suffix=".md")
    figs = []
    for name, caption, fn in (
            ("montage", "New slices per method beside the truth",
             lambda p: montage_figure(figures_data.get("montage", {}), methods, p)),
            ("lax_overlay", "LAX views with the reconstruction's intersection",
             lambda p: lax_overlay_figure(figures_data.get("lax", {}), methods, p)),
            ("dice_hd95", "Dice and HD95 per method", lambda p: box_figure(rows, all_methods, p)),
            ("ef_scatter", "Ejection fraction: reconstructed vs true", lambda p: ef_figure(rows, all_methods, p))):
        path = fn(figdir / f"{name}.png")
        if path is not None:
            figs.append((caption, path))
            written[name] = path
    page = html_page(summ, figs, title, intro, "results.csv")
    written["html"] = atomic_write(out / "report.html", lambda tmp: tmp.write_text(page), suffix=".html")
    written["summary"] = summ  # type: ignore[assignment]
    return written
