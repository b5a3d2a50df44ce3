"""Evaluation outputs: the CSV (one row per case, method, frame and structure), the findings
(paired bootstrap against linear), the tables (image quality / segmentation / function / cost),
the Markdown summary, the figures (PNG) and one self-contained HTML page (`page.build_page`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardiorecon.io.nifti import atomic_write
from cardiorecon.metrics.seg import EMPTY_KINDS, STRUCTURES
from cardiorecon.report import figures as F
from cardiorecon.report.findings import Finding, Measure, findings, near_best, unit_values
from cardiorecon.report.results_csv import COLUMNS, TRUTH_IMAGE, read_csv, read_failures, write_csv  # noqa: F401

SHORT = {"lv_cavity": "LV", "lv_myocardium": "Myo", "rv_cavity": "RV"}
GROUPS = ("Image quality", "Segmentation: overlap", "Segmentation: surface distance", "Function", "Cost")


# ------------------------------------------------------------------------------------ measures

def _has(rows, column, structure_pred) -> bool:
    return any(r[column] != "" and r[column] is not None and structure_pred(str(r["structure"])) for r in rows)


def measures(protocol: str, rows: list[dict]) -> list[Measure]:
    """The measures of one protocol's rows, in table order (only those with values)."""
    out: list[Measure] = []
    if protocol == "lax-holdout":
        out += [Measure("LAX NCC", "ncc", GROUPS[0], True, lax_prefix=True),
                Measure("LAX SSIM", "ssim", GROUPS[0], True, lax_prefix=True)]
    else:
        out += [Measure("SSIM", "ssim", GROUPS[0], True), Measure("PSNR", "psnr", GROUPS[0], True, digits=2, unit="dB")]
        if _has(rows, "ncc", lambda s: s == "image"):
            out.append(Measure("LAX NCC", "ncc", GROUPS[0], True))
    structs = tuple(s for s in STRUCTURES if _has(rows, "dice", lambda x, s=s: x == s or x.startswith(s + "@")))
    for column, label, higher, digits, unit, group in (("dice", "Dice", True, 3, "", GROUPS[1]),
                                                       ("hd95", "HD95", False, 2, "mm", GROUPS[2])):
        for s in structs:
            out.append(Measure(f"{label} {SHORT[s]}", column, group, higher, (s,), digits=digits, unit=unit,
                               headline=len(structs) == 1))
        if len(structs) > 1:
            out.append(Measure(f"{label} mean", column, group, higher, structs, mean_over_structures=True,
                               digits=digits, unit=unit))
    for s in ("lv", "rv"):
        if _has(rows, "ef_error", lambda x, s=s: x == s):
            out.append(Measure(f"EF error {s.upper()}", "ef_error", GROUPS[3], False, (s,), digits=1, unit="pp"))
    cost = {"lax_prefix": True} if protocol == "lax-holdout" else {}
    if _has(rows, "seconds", lambda s: True):
        out.append(Measure("time per frame", "seconds", GROUPS[4], False, headline=False, digits=2, **cost))
    if _has(rows, "peak_mb", lambda s: True):
        out.append(Measure("memory", "peak_mb", GROUPS[4], False, headline=False, digits=0, unit="MB", **cost))
    return out


def _stat(rows, measure: Measure, method: str, case: str | None = None) -> tuple[float, float, int]:
    v = unit_values(rows if case is None else [r for r in rows if r["case"] == case], measure, method)
    a = np.array(list(v.values()))
    return (float(a.mean()), float(a.std()), len(a)) if len(a) else (float("nan"), float("nan"), 0)


def _fmt(mean: float, std: float, n: int, measure: Measure) -> str:
    if n == 0 or not np.isfinite(mean):
        return "-"
    if measure.column == "seconds":  # per cell: milliseconds where small, seconds otherwise
        scale, unit = (1000.0, "ms") if mean < 1 else (1.0, "s")
        d = 0 if mean * scale >= 10 else 1
        m, sd = mean * scale, std * scale
        return (f"{m:.{d}f} ± {sd:.{d}f} {unit}" if n > 1 else f"{m:.{d}f} {unit}") if mean < 1 else \
            (f"{m:.2f} ± {sd:.2f} s" if n > 1 else f"{m:.2f} s")
    d = measure.digits
    return f"{mean:.{d}f} ± {std:.{d}f}" if n > 1 else f"{mean:.{d}f}"


def _methods(rows: list[dict]) -> list[str]:
    ms = list(dict.fromkeys(r["method"] for r in rows if r["method"] != TRUTH_IMAGE))
    return ms + ([TRUTH_IMAGE] if any(r["method"] == TRUTH_IMAGE for r in rows) else [])


def summary(rows: list[dict]) -> dict[str, dict]:
    """{protocol: {"measures", "methods", "cases", "findings", "cells": {method: [(mean, std, n)]},
    "best": {measure label: method}, "near": {measure label: set of methods}}}"""
    out = {}
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        pr = [r for r in rows if r["protocol"] == protocol]
        methods = _methods(pr)
        real = [m for m in methods if m != TRUTH_IMAGE]
        ms = measures(protocol, pr)
        cells = {m: [_stat(pr, x, m) for x in ms] for m in methods}
        best, near = {}, {}
        for j, x in enumerate(ms):
            cand = {m: cells[m][j][0] for m in real if cells[m][j][2]}
            if cand:
                b = (max if x.higher_is_better else min)(cand, key=cand.get)
                best[x.label] = b
                near[x.label] = near_best(pr, x, [m for m in cand if m != b], b)
        out[protocol] = {"measures": ms, "methods": methods, "cases": len({r["case"] for r in pr}),
                         "empty": empty_counts(pr),
                         "frames": len({(r["case"], r["frame"]) for r in pr if r["frame"] != "ed-es"}),
                         "cells": cells, "best": best, "near": near, "findings": findings(pr, ms, real)}
    return out


def empty_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{method: {kind: rows}} of the Dice/HD95 rows with an empty side (`metrics.seg.EMPTY_KINDS`, the start
    of the row's note): reported apart, never averaged in (Dice of two empty masks and HD95 with an empty
    side are NaN; an empty prediction's Dice 0 stays in the Dice mean, as a miss)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        note = str(r.get("note", "") or "")
        kind = next((k for k in EMPTY_KINDS if note.startswith(k)), None)
        if kind is not None:
            per = out.setdefault(str(r["method"]), {})
            per[kind] = per.get(kind, 0) + 1
    return out


def _empty_note(empty: dict[str, dict[str, int]]) -> str:
    parts = [f"{m}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items())) for m, c in empty.items()]
    return ("Empty cases, reported apart (structure rows): " + "; ".join(parts) + ". An empty prediction keeps "
            "Dice 0 in the Dice mean (a miss) and has no HD95; an empty reference has no HD95 and its Dice 0 is kept; "
            "a structure absent from both is not scored (no Dice, no HD95).")


def _verdict(f: Finding) -> str:
    kinds = {c.verdict for c in f.comparisons}
    if not kinds:
        return ""  # nothing compared (one method): no interval, so no "not distinguishable" mark
    if "better" in kinds:
        return "better"
    if kinds == {"worse"}:
        return "worse"
    # "none" (no method distinguishable) only where an interval was computed for some method
    return "none" if "indistinguishable" in kinds or "worse" in kinds else "untested"


def _cost_sentence(s: dict) -> str:
    j = next((j for j, x in enumerate(s["measures"]) if x.column == "seconds"), None)
    if j is None:
        return ""
    parts = [f"{m} {_fmt(s['cells'][m][j][0], 0.0, 1, s['measures'][j])}" for m in s["methods"]
             if s["cells"][m][j][2]]
    return " Time per frame: " + ", ".join(parts) + "." if parts else ""


def headline(s: dict) -> str:
    """One sentence over every measure of a protocol's summary (and the time each method takes)."""
    fs: list[Finding] = s["findings"]
    if not fs:
        return _cost_sentence(s).strip()
    return _headline(s, fs) + _cost_sentence(s)


def _headline(s: dict, fs: list[Finding]) -> str:
    ref = fs[0].reference
    better: dict[str, list[str]] = {}
    for f in fs:
        for c in f.comparisons:
            if c.verdict == "better":
                better.setdefault(c.method, []).append(f.measure.label)
    none = [f.measure.label for f in fs if not any(c.verdict == "better" for c in f.comparisons)]
    lead = f"{s['cases']} case(s), each method compared with {ref} on the same units (paired bootstrap, 95 %). "
    if all(c.verdict == "untested" for f in fs for c in f.comparisons):
        n = max(f.n for f in fs)
        return lead + (f"Too few paired values (at most {n}) to tell any method from {ref}: the differences below "
                       "are descriptive only.")
    if not better:
        return lead + f"No method is better than {ref} beyond noise on any of the {len(fs)} headline measures."
    lead += "Better than " + ref + ": " + "; ".join(f"{m} on {', '.join(v)}" for m, v in better.items()) + "."
    if none:
        lead += f" No method is better than {ref} on {', '.join(none)}."
    return lead


def markdown(summ: dict[str, dict]) -> str:
    parts = []
    for protocol, s in summ.items():
        parts.append(f"### {protocol} ({s['cases']} case(s))\n")
        if s["findings"]:
            parts.append("Findings (paired difference from the reference, 95 % bootstrap interval):\n")
            parts += [f"- {f.sentence}" + (f" *Warning: {f.warning}.*" if f.warning else "") for f in s["findings"]]
            parts.append("")
        heads = [x.label + (f" ({x.unit})" if x.unit else "") for x in s["measures"]]
        parts.append("| method | " + " | ".join(heads) + " |")
        parts.append("|---|" + "---|" * len(heads))
        for m in s["methods"]:
            cells = []
            for x, c in zip(s["measures"], s["cells"][m]):
                t = _fmt(*c, x)
                cells.append(f"**{t}**" if s["best"].get(x.label) == m else t)
            parts.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("")
        parts += [f"{n}" for n in notes(s)]
        parts.append("")
    return "\n".join(parts) + "\n"


def notes(s: dict) -> list[str]:
    """Footnotes that apply to the columns actually shown."""
    labels = {x.column for x in s["measures"]}
    out = ["Values: mean ± std over units (case x frame rows; for a mean over structures, each case x frame's "
           "mean first). Bold: best mean; shaded: not distinguishable from the best (95 % paired bootstrap "
           "interval of the difference includes 0)."]
    if TRUTH_IMAGE in s["methods"]:
        out.append(f"{TRUTH_IMAGE}: the segmentation network on the true dense image, no reconstruction: the "
                   "segmenter's own error, a floor for every method's Dice/HD95/EF (never marked best).")
    if "hd95" in labels:
        out.append("HD95: 95th percentile of the surface distance in mm, measured on the pixels of the grid the "
                   "labels are compared on: one pixel (e.g. 2 mm on a 2 mm grid) is the smallest non-zero value, so "
                   "a value of one pixel means the surfaces are within one pixel; slice-drop averages 2D HD95 over "
                   "the scored slices.")
    if s.get("empty"):
        out.append(_empty_note(s["empty"]))
    if "ef_error" in labels:
        out.append("EF error: absolute difference from the true ejection fraction, in percentage points (pp).")
    if "peak_mb" in labels or "seconds" in labels:
        out.append("Cost: time per reconstructed frame on the machine under Provenance; memory: the peak resident "
                   "memory above what the process held before the method ran, plus the weights it uses (a "
                   "classical method uses none).")
    return out


# --------------------------------------------------------------------------------------- tables

def tables(protocol: str, s: dict, rows: list[dict], colours: dict[str, str]) -> list[dict]:
    """The page's tables of one protocol (plain data for `page.table_html`), one per group."""
    pr = [r for r in rows if r["protocol"] == protocol]
    cases = list(dict.fromkeys(r["case"] for r in pr))
    out = []
    for group in GROUPS:
        idx = [j for j, x in enumerate(s["measures"]) if x.group == group]
        if not idx:
            continue
        cols = [{"label": s["measures"][j].label + (f" ({s['measures'][j].unit})" if s["measures"][j].unit else ""),
                 "title": ("higher" if s["measures"][j].higher_is_better else "lower") + " is better"} for j in idx]
        trs = []
        for m in s["methods"]:
            cells = []
            for j in idx:
                x = s["measures"][j]
                mean, std, n = s["cells"][m][j]
                cells.append({"text": _fmt(mean, std, n, x), "value": mean if n else None, "title": f"n = {n}",
                              "best": s["best"].get(x.label) == m, "near": m in s["near"].get(x.label, ())})
            details = []
            if len(cases) > 1 or any(s["cells"][m][j][2] > 1 for j in idx):
                for c in cases:
                    dc = []
                    for j in idx:
                        mean, std, n = _stat(pr, s["measures"][j], m, c)
                        dc.append({"text": _fmt(mean, std, n, s["measures"][j]), "value": mean if n else None,
                                   "title": f"n = {n}"})
                    details.append({"name": c, "cells": dc})
            trs.append({"name": m, "colour": colours.get(m, ""), "cells": cells, "details": details})
        out.append({"id": f"t-{protocol}-{GROUPS.index(group)}", "title": f"{group}", "columns": cols,
                    "rows": trs, "caption": "Click a column to sort; click a method for its per-case values."})
    return out


def artefact_table(artefacts: dict, methods: list[str], colours: dict[str, str]) -> dict | None:
    """Plain-data table of `cardiorecon.report.artefacts` indicators {(case, frame, method): {...}}:
    per method the mean ± std over case x frame, per-case rows on click."""
    if not artefacts:
        return None
    keys = [("overshoot", "overshoot (% of new-slice voxels)", 100.0, 2),
            ("islands", "label islands per volume", 1.0, 1)]
    keys = [k for k in keys if any(k[0] in v for v in artefacts.values())]
    cases = list(dict.fromkeys(c for c, _, _ in artefacts))

    def cell(vals, scale, digits):
        a = np.array([v * scale for v in vals if v == v])
        if not len(a):
            return {"text": "-", "value": None}
        text = f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if len(a) > 1 else f"{a.mean():.{digits}f}"
        return {"text": text, "value": float(a.mean()), "title": f"n = {len(a)}"}

    rows = []
    for m in methods:
        items = {k: v for k, v in artefacts.items() if k[2] == m}
        if not items:
            continue
        cells = [cell([v[k] for v in items.values() if k in v], sc, d) for k, _, sc, d in keys]
        details = [{"name": c, "cells": [cell([v[k] for (cc, _, _), v in items.items() if cc == c and k in v], sc, d)
                                         for k, _, sc, d in keys]} for c in cases]
        rows.append({"name": m, "colour": colours.get(m, ""), "cells": cells, "details": details})
    return {"id": "t-artefacts", "title": "Artefact indicators", "columns": [{"label": k[1], "title": "lower is "
                                                                                 "better"} for k in keys],
            "rows": rows,
            "notes": ["Overshoot: new-slice voxels brighter or darker than both acquired slices around them (by more "
                      "than 0.05 of the [-1, 1] range): ringing of a spline, or structure a prior invented; nearest "
                      "and linear cannot overshoot. Islands: connected pieces of a predicted label class beyond its "
                      "largest, in 3D (false contour islands, stray blobs)."]}


# --------------------------------------------------------------------------------------- figures

def _scroller_section(figures_data: dict, methods: list[str], colours: dict[str, str]) -> dict | None:
    data = figures_data.get("scroller") or {}
    if not data:
        return None
    from cardiorecon.report.page import scroller_html

    cases, columns = {}, None
    for case, entry in data.items():
        frames = list(entry["frames"])
        ms = [m for m in methods if all(m in entry["frames"][f]["methods"] for f in frames)]
        if columns is None:
            columns = ["reference"] + ms
        pngs = {}
        for fi, f in enumerate(frames):
            d = entry["frames"][f]
            for si in range(len(entry["slices"])):
                def sl(a, si=si):
                    return None if a is None else a[:, :, si]

                pngs[f"{fi}:{si}"] = F.scroller_strip(sl(d["truth"]), sl(d["truth_labels"]),
                                                      [(sl(d["methods"][m][0]), sl(d["methods"][m][1])) for m in ms],
                                                      zoom=2)
        cases[case] = {"frames": frames, "slices": entry["slices"], "png": pngs}
    alt = ("top row: the reference slice and each method's reconstruction with contours (predicted solid, reference "
           "dotted white); bottom row: each method's absolute error, black 0 to yellow 0.5 or more")
    return {"id": "slices", "title": "Slices and frames, case by case",
            "html": scroller_html(cases, columns, colours, alt=alt),
            "caption": "Pick a case and move the sliders through its frames and new (reconstructed) slices. Top: "
                       "the reference then each method; contours: LV cavity red, LV myocardium yellow, RV cavity "
                       "cyan (predicted, solid; the reference contours as white dots). Bottom: |reconstruction - "
                       "reference|, magma from 0 (black) to 0.5 of the [-1, 1] intensity range (yellow). "
                       f"Up to {len(next(iter(cases.values()))['slices'])} new slices per frame are shown."}


def write_report(rows: list[dict], figures_data: dict, methods: list[str], out: Path, title: str, intro: str,
                 provenance: dict | None = None, failures: list[dict] | None = None,
                 sections: list[dict] | None = None) -> dict:
    """Write results.csv, summary.md, figures/*.png and report.html under `out`.

    `sections`: extra blocks (see `page.build_page`), e.g. alignment shifts, shown after the built-in
    figures; `failures`: cases that failed ({case, error}), listed at the top."""
    from cardiorecon.report.page import build_page

    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    all_methods = _methods(rows)
    colours = F.method_colours(list(dict.fromkeys(methods + all_methods)))
    written: dict = {"csv": write_csv(rows, out / "results.csv")}
    summ = summary(rows)
    md = f"# {title}\n\n{intro}\n\n" + markdown(summ)
    if provenance:
        md += f"\nCommand: `{provenance.get('command', '')}`; {provenance.get('date_utc', '')}; " \
              f"git {provenance.get('git_commit', '')}\n"
    if failures:
        md += "\nFailed cases:\n" + "".join(f"- {f['case']}: {f['error']}\n" for f in failures)
    written["markdown"] = atomic_write(out / "summary.md", lambda tmp: tmp.write_text(md), suffix=".md")

    page_tables, page_findings, heads, page_notes, shared_warnings = [], [], [], [], []
    for protocol, s in summ.items():
        for t in tables(protocol, s, rows, colours):
            page_tables.append({**t, "title": f"{protocol}: {t['title']}"} if len(summ) > 1 else t)
        warnings = {f.warning for f in s["findings"]}
        shared = warnings.pop() if len(warnings) == 1 else ""
        page_findings += [{"sentence": f.sentence, "warning": "" if shared else f.warning, "verdict": _verdict(f)}
                          for f in s["findings"]]
        heads.append(headline(s))
        shared_warnings.append(shared)
        page_notes += notes(s)

    art = artefact_table(figures_data.get("artefacts", {}), methods, colours)
    if art:
        page_tables.append(art)
    secs: list[dict] = []
    scroller = _scroller_section(figures_data, methods, colours)
    if scroller:
        secs.append(scroller)
    mont = figures_data.get("montage", {})
    p = F.montage_figure(mont, methods, colours, figdir / "montage.png")
    if p:
        written["montage"] = p
        secs.append({"title": "New slices beside the reference", "png": p,
                     "alt": f"Montage of new slices of {mont.get('case')} frame {mont.get('frame')}: the reference and "
                            "each method with contours and absolute error maps",
                     "caption": "Left of each pair: the slice with the predicted contours (solid; LV cavity red, LV "
                                "myocardium yellow, RV cavity cyan) over the reference ones (white dashed); right: "
                                "|reconstruction - reference| (colour bar). Look for ringing at edges (overshoot next "
                                "to bright blood), contour islands outside the heart and blur across the gap."})
    lax = figures_data.get("lax", {})
    if lax:
        where = figures_data.get("lax_where", {})  # lax-holdout: no montage, the case and frame shown
        case = mont.get("case") or where.get("case") or next(iter(figures_data.get("scroller", {}) or {"first case": 0}))
        frame = mont.get("frame", where.get("frame", ""))
        for v, path in F.lax_overlay_figures(lax, methods, colours, figdir, case, frame):
            written[f"lax_overlay_{v}"] = path
            secs.append({"title": f"{v} view: the reconstruction on the long-axis plane", "png": path,
                         "alt": f"{v} long-axis image of {case} frame {frame} and each method's reconstruction "
                                "sampled on its plane",
                         "caption": "Cropped to the heart (where the predicted labels fall on the plane, else where "
                                    "the plane crosses the short-axis stack: green outline) and drawn at twice the "
                                    "pixel grid. Inside the outline: the reconstruction sampled on "
                                    "the plane, intensity-matched to the LAX image; outside, the LAX image dimmed. "
                                    "Horizontal bands at the acquired slice positions show the through-plane "
                                    "resolution; contours: predicted labels sampled on the plane."})
    for protocol, s in summ.items():
        pr = [r for r in rows if r["protocol"] == protocol]
        for groups, group, name in (((GROUPS[0],), GROUPS[0], "strip_image"),
                                    ((GROUPS[1], GROUPS[2]), "Segmentation", "strip_segmentation")):
            ms = [x for x in s["measures"] if x.group in groups]
            p = F.strip_figure(pr, ms, s["methods"], colours, figdir / f"{name}_{protocol}.png")
            if p:
                written[f"{name}_{protocol}"] = p
                secs.append({"title": f"{group}: every case and frame ({protocol})", "png": p,
                             "alt": f"Strip plots of {', '.join(x.label for x in ms)} per method",
                             "caption": "One dot per unit (case x frame, per structure), one colour per method as in "
                                        "every figure; black bar: the mean and its 95 % bootstrap interval."})
    p = F.bland_altman_figure(rows, all_methods, colours, figdir / "ef_bland_altman.png")
    if p:
        written["ef_bland_altman"] = p
        secs.append({"title": "Ejection fraction: agreement with the truth", "png": p,
                     "alt": "Bland-Altman plots of reconstructed minus true ejection fraction for LV and RV",
                     "caption": "Bland-Altman: each subject's reconstructed minus true EF against their mean. Solid "
                                "line: the method's bias; dotted: bias ± 1.96 SD (95 % limits of agreement)."})
    study = mont.get("study")
    if study is not None and study.lax:
        from cardiorecon.report.overlay import overlay_figure

        p = overlay_figure(study, figdir / "acquisition_geometry.png", int(mont.get("frame", 0) or 0))
        written["acquisition_geometry"] = p
        secs.append({"title": f"Acquisition geometry ({mont.get('case')})", "png": p,
                     "alt": "Short-axis mid slice with the long-axis intersection lines, and each long-axis view "
                            "with the short-axis slice lines",
                     "caption": "Lines computed from the images' affines alone: the SAX mid slice with each LAX "
                                "plane's intersection (coloured), and each LAX view with the SAX slice positions "
                                "(yellow). A line through the wrong anatomy means wrong geometry or breath-hold "
                                "misalignment."})
    p = F.lag_curves_figure(figures_data.get("lag_curves", {}), figdir / "lag_loss.png")
    if p:
        written["lag_loss"] = p
        secs.append({"title": "LAG optimisation", "png": p, "alt": "LAG loss per iteration",
                     "caption": "LAG's objective per iteration (solid), with its weighted LAX term (dashed) and "
                                "continuity term (dotted), one colour per frame. A flat LAX term means the LAX views "
                                "did not change the result."})
    from cardiorecon.report.alignment import alignment_section  # issue 13: shifts, NCC before/after

    secs += alignment_section(figures_data.get("alignment", {}), figdir, figures_data.get("montage", {}).get("study"))
    secs += sections or []
    page = build_page(title, intro, findings=page_findings, headline=" ".join(h for h in heads if h),
                      warning="; ".join(w for w in dict.fromkeys(shared_warnings) if w),
                      tables=page_tables, sections=secs, provenance=provenance, failures=failures,
                      links=[("results.csv", "results.csv"), ("summary.md", "summary.md")],
                      notes=list(dict.fromkeys(page_notes)))
    written["html"] = atomic_write(out / "report.html", lambda tmp: tmp.write_text(page), suffix=".html")
    written["summary"] = summ
    return written
