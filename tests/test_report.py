"""The report: findings from known results, a self-contained valid page, and (where Chromium is
installed) the page opened in a real browser: every image loads and the table sorts."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cardiorecon.evaluate import COLUMNS
from cardiorecon.report.evaluation import read_csv, summary, write_csv, write_report
from cardiorecon.report.figures import method_colours
from cardiorecon.report.findings import Measure, compare, finding, paired_bootstrap
from cardiorecon.report.page import build_page

SSIM = Measure("SSIM", "ssim", "Image quality", True)


def _row(**kw) -> dict:
    r = {c: "" for c in COLUMNS}
    r.update(kw)
    return r


def known_rows(cases: int = 12, seed: int = 0) -> list[dict]:
    """linear: random per unit; better: linear + 0.05 (+- 0.01); same: linear +- 0.01 alternating
    (mean difference exactly 0); worse: linear - 0.04; a truth-image row set for segmentation."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(cases):
        for t in (0, 9):
            base = rng.uniform(0.5, 0.8)
            sign = 1 if (2 * c + (t > 0)) % 2 else -1
            for m, v in (("linear", base), ("better", base + 0.05 + rng.uniform(-0.01, 0.01)),
                         ("same", base + 0.01 * sign), ("worse", base - 0.04)):
                rows.append(_row(protocol="phantom", case=f"c{c:02d}", method=m, frame=t, structure="image", ssim=v,
                                 psnr=20 + 10 * v, seconds=0.004 if m != "better" else 2.5, peak_mb=10.0))
                for s, d in (("lv_cavity", 0.8), ("lv_myocardium", 0.6), ("rv_cavity", 0.7)):
                    rows.append(_row(protocol="phantom", case=f"c{c:02d}", method=m, frame=t, structure=s,
                                     dice=d + (v - base), hd95=4.0 - 10 * (v - base)))
            rows.append(_row(protocol="phantom", case=f"c{c:02d}", method="truth-image", frame=t, structure="lv_cavity",
                             dice=0.9, hd95=2.0))
        for m, err in (("linear", 5.0), ("better", 2.0), ("same", 5.0), ("worse", 8.0)):
            rows.append(_row(protocol="phantom", case=f"c{c:02d}", method=m, frame="ed-es", structure="lv",
                             ef=30.0 + err, true_ef=30.0, ef_error=err + rng.uniform(-0.5, 0.5)))
    return rows


def test_paired_bootstrap_hand_cases():
    mean, lo, hi = paired_bootstrap(np.full(20, 0.3))
    assert mean == pytest.approx(0.3) and lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    mean, lo, hi = paired_bootstrap(np.array([1.0, -1.0] * 10))
    assert mean == 0 and lo < 0 < hi
    assert np.isnan(paired_bootstrap(np.array([1.0]))[1])


def test_findings_from_a_known_csv(tmp_path):
    path = write_csv(known_rows(), tmp_path / "results.csv")
    rows = read_csv([path])
    methods = ["linear", "better", "same", "worse"]
    f = finding(rows, SSIM, methods)
    assert f.best == "better" and f.reference == "linear"
    verdicts = {c.method: c for c in f.comparisons}
    assert verdicts["better"].verdict == "better" and verdicts["better"].low > 0.03
    assert verdicts["better"].n == 24 and verdicts["better"].difference == pytest.approx(0.05, abs=0.005)
    assert verdicts["same"].verdict == "indistinguishable" and verdicts["same"].low < 0 < verdicts["same"].high
    assert verdicts["worse"].verdict == "worse" and verdicts["worse"].high < 0
    assert "Better than linear: better +0.05" in f.sentence and "Indistinguishable from linear: same" in f.sentence
    assert "n = 24 paired units" in f.sentence
    assert f.warning == ""
    # lower is better (HD95): 'better' has the smaller distance and is found as such
    s = summary(rows)["phantom"]
    labels = {x.label: x for x in s["measures"]}
    assert {"SSIM", "PSNR", "Dice LV", "Dice mean", "HD95 mean", "EF error LV", "time per frame", "memory"} \
        <= set(labels)
    hd = next(x for x in s["findings"] if x.measure.label == "HD95 mean")
    assert hd.best == "better" and {c.method: c.verdict for c in hd.comparisons}["better"] == "better"
    # the mean over structures: one unit per case x frame, not per structure
    dm = next(x for x in s["findings"] if x.measure.label == "Dice mean")
    assert dm.n == 24
    assert s["best"]["Dice LV"] == "better"  # truth-image (0.9) is never best
    assert s["near"]["SSIM"] == set()  # every other method is distinguishable from 'better'


def test_equal_methods_are_indistinguishable_and_small_n_warns(tmp_path):
    rows = [r for r in known_rows(cases=3, seed=1) if r["method"] in ("linear", "same")]
    f = finding(rows, SSIM, ["linear", "same"])
    (c,) = f.comparisons
    assert c.verdict == "indistinguishable" and c.n == 6 and c.low < 0 < c.high
    assert "No method is better than linear beyond noise" in f.sentence
    assert "only 6 paired value(s)" in f.warning and "case(s)" not in f.warning
    # identical values: a zero-width interval at 0 is still 'indistinguishable'
    twin = [dict(r, method="twin") for r in rows if r["method"] == "linear"]
    c = compare(rows + twin, SSIM, "twin", "linear")
    assert c.verdict == "indistinguishable" and c.difference == 0
    # one case, two frames: even a large, consistent difference gets no verdict
    rows = [r for r in known_rows(cases=1, seed=2) if r["method"] in ("linear", "better")]
    f = finding(rows, SSIM, ["linear", "better"])
    (c,) = f.comparisons
    assert c.verdict == "untested" and c.n == 2 and c.difference > 0.03
    assert "Too few paired values" in f.sentence and "Better than" not in f.sentence
    assert "1 case(s)" in f.warning


def test_method_colours_are_distinct_for_any_names():
    names = ["linear", "register", "fusion", "new-method", "another", "nearest"]
    colours = method_colours(names)
    assert len(set(colours.values())) == len(names)
    assert colours["linear"] == method_colours(["linear"])["linear"]


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "input", "hr", "link", "source", "wbr", "col", "area", "base", "embed", "track"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.imgs, self.urls, self.meta, self.ids = [], [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "meta":
            self.meta.append(a)
        if "id" in a:
            self.ids.append(a["id"])
        for k in ("src", "href"):
            if k in a:
                self.urls.append(a[k])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
        else:
            self.stack.pop()


def synthetic_figures(methods: list[str]) -> dict:
    rng = np.random.default_rng(0)
    X, Y, Z = 24, 20, 9
    yy, xx = np.meshgrid(np.arange(Y), np.arange(X))
    lab = np.zeros((X, Y, Z), np.int16)
    lab[(xx - 12) ** 2 + (yy - 10) ** 2 < 20] = 1
    truth = np.where(lab > 0, 0.6, -0.5) + 0.05 * rng.standard_normal((X, Y, Z))
    scroller = {"c00": {"slices": [1, 3, 5], "frames": {}}}
    for t in (0, 9):
        scroller["c00"]["frames"][t] = {"truth": truth[:, :, [1, 3, 5]], "truth_labels": lab[:, :, [1, 3, 5]],
                                        "methods": {m: (truth[:, :, [1, 3, 5]] + 0.1 * k, lab[:, :, [1, 3, 5]])
                                                    for k, m in enumerate(methods)}}
    valid = np.zeros((30, 26), bool)
    valid[5:25, 4:22] = True
    lax_img = rng.standard_normal((30, 26))
    return {"scroller": scroller,
            "artefacts": {(f"c{c:02d}", str(t), m): {"overshoot": 0.01 * k, "islands": float(k)}
                          for c in range(2) for t in (0, 9) for k, m in enumerate(methods)},
            "montage": {"truth": truth, "truth_labels": lab, "new": [1, 2, 3, 5], "case": "c00", "frame": 0,
                        **{m: (truth + 0.1, lab) for m in methods}},
            "lax": {("4ch", m): (lax_img, lax_img + 0.1, valid, None) for m in methods},
            "lag_curves": {("c00", "2ch,4ch"): {0: [{"iteration": i, "loss": 1 / (i + 1), "lax": 0.1, "continuity": 0.05}
                                                    for i in range(5)]}}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from cardiorecon.report.provenance import collect

    out = tmp_path_factory.mktemp("report")
    methods = ["linear", "better", "same", "worse"]
    prov = collect(["cardiorecon", "evaluate", "x"], data={"c00": {"layout": "ukbb", "sax_matrix": "24x20"}},
                   weights=[{"role": "diffae", "name": "tiny", "sha256": "abc", "file": "/w/diffae_tiny/model.safetensors"}],
                   protocol="phantom", protocol_text="Phantom protocol.")
    written = write_report(known_rows(), synthetic_figures(methods), methods, out, "test report", "intro",
                           provenance=prov, failures=[{"case": "bad01", "error": "x.nii.gz: not a NIfTI"}],
                           sections=[{"title": "Alignment", "caption": "per-slice shifts", "html": "<p>shifts</p>"}])
    return out, written


def test_report_page_is_self_contained_and_valid(report):
    out, written = report
    text = (out / "report.html").read_text()
    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], p.stack
    assert any(m.get("name") == "viewport" for m in p.meta)
    assert p.imgs and all(i.get("alt") and i["src"].startswith("data:image/png;base64,") for i in p.imgs)
    assert not [u for u in p.urls if re.match(r"(?i)^\s*(https?:)?//", u)]
    assert not re.search(r"(?i)(src|href)\s*=\s*['\"]?\s*(https?:)?//", text)
    assert len(p.ids) == len(set(p.ids))
    assert text.count("<figcaption>") >= 5
    # findings first, with the better method named and the failure listed
    assert text.index("id='findings-h'") < text.index("id='tables'") < text.index("id='provenance'")
    assert re.search(r"better \+0\.05\d \[\+0\.0\d\d, \+0\.0\d\d\]", text) and "bad01" in text and "not a NIfTI" in text and "Alignment" in text
    assert "±" in text and "+-" not in text
    assert "Artefact indicators" in text and "label islands per volume" in text
    for name in ("montage", "lax_overlay_4ch", "ef_bland_altman", "lag_loss", "strip_image_phantom"):
        assert written[name].is_file(), name
    # time per frame: milliseconds where small, seconds otherwise, never "0.00"
    assert "4.0 ± 0.0 ms" in text and "2.50 ± 0.00 s" in text
    md = (out / "summary.md").read_text()
    assert "**" in md and "Findings" in md and "bad01" in md


def test_page_builder_takes_plain_data():
    html = build_page("cohort", findings=[{"sentence": "a < b", "warning": "", "verdict": "none"}],
                      tables=[{"title": "t", "first_column": "subject", "columns": [{"label": "EF"}],
                               "rows": [{"name": "s1", "cells": [{"text": "55.0", "value": 55.0}]}]}],
                      sections=[{"title": "fig", "png": _tiny_png(), "caption": "cap", "alt": "a figure"}])
    assert "a &lt; b" in html and "subject" in html and "alt='a figure'" in html and "<figcaption>cap" in html


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and Path(p).exists()), None)

PROBE = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
 var imgs = Array.prototype.slice.call(document.images);
 var bad = imgs.filter(function(i){ return !(i.complete && i.naturalWidth > 0); }).length;
 var tbl = document.querySelector('table.sortable');
 var col = 1; var btn = tbl.tHead.rows[0].cells[col].querySelector('button');
 btn.click();
 var asc = Array.prototype.map.call(tbl.tBodies, function(b){ return b.rows[0].cells[col].getAttribute('data-v'); });
 btn.click();
 var desc = Array.prototype.map.call(tbl.tBodies, function(b){ return b.rows[0].cells[col].getAttribute('data-v'); });
 var exp = tbl.querySelector('button.expand'); var hiddenBefore = exp.closest('tbody').querySelector('tr.detail').hidden;
 exp.click(); var hiddenAfter = exp.closest('tbody').querySelector('tr.detail').hidden;
 var sl = document.querySelector('.scroller input.slice'); var im = document.querySelector('.scroller img');
 var src0 = im.src; sl.value = 1; sl.dispatchEvent(new Event('input')); var moved = im.src !== src0;
 var pre = document.createElement('pre'); pre.id = 'probe';
 pre.textContent = JSON.stringify({images: imgs.length, broken: bad, asc: asc, desc: desc,
   expanded: hiddenBefore && !hiddenAfter, scrolled: moved});
 document.body.appendChild(pre);
}, 300); });
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (/usr/bin/chromium absent): "
                                             "browser check skipped; install chromium to run it")
def test_report_in_headless_chromium(report, tmp_path):
    import json

    out, _ = report
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", res.stdout, re.S)
    assert m, res.stderr[-2000:]
    probe = json.loads(m.group(1).replace("&quot;", '"'))
    assert probe["images"] >= 6 and probe["broken"] == 0
    assert len(probe["asc"]) == 5 and probe["asc"][-1] is None and probe["desc"][-1] is None  # truth-image: no SSIM
    asc = [float(v) for v in probe["asc"][:-1]]
    desc = [float(v) for v in probe["desc"][:-1]]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and asc != desc
    assert probe["expanded"] and probe["scrolled"]


def test_artefact_indicators_hand_cases():
    from scipy.interpolate import CubicSpline

    from cardiorecon.report.artefacts import islands, overshoot_fraction

    # a step through the stack: acquired slices 0, 4, 8, 12 (factor 4), new slices in between
    acquired = np.array([-1.0, -1.0, 1.0, 1.0])
    z_acq, z = np.arange(4) * 4, np.arange(13)
    new = [k for k in z if k % 4]
    linear = np.broadcast_to(np.interp(z, z_acq, acquired), (3, 2, 13)).copy()
    cubic = np.broadcast_to(CubicSpline(z_acq, acquired)(z), (3, 2, 13)).copy()
    assert overshoot_fraction(linear, new) == 0.0
    # not-a-knot through 4 points is the cubic p(u) = -u^3/96 + 13u/24, u = z - 6: in the outer gaps
    # (|u| = 3, 4, 5) |p| = 1.34, 1.50, 1.41 > 1.05 (all 6 rings); in the middle one |p| < 1 (none)
    assert overshoot_fraction(cubic, new) == pytest.approx(6 / 9)
    lab = np.zeros((10, 10, 4), np.int16)
    lab[1:4, 1:4, :] = 1
    lab[7, 7, 2] = 1  # a one-voxel island of class 1
    lab[5:7, 0:2, 0] = 3
    assert islands(lab) == 1
    lab[8:10, 8:10, 0] = 1  # not touching (7, 7, 2): two slices away
    assert islands(lab) == 2
    lab[8, 8, 1] = 1  # bridges (8, 8, 0) and (7, 7, 2) diagonally: one island again
    assert islands(lab) == 1


def test_empty_cases_are_reported_apart_and_not_averaged(tmp_path):
    """Issue 29: an empty prediction's HD95 (the image diagonal) and two empty masks' Dice 1 were averaged
    into the tables silently. Now they are empty cells, counted apart in the notes."""
    from cardiorecon.report.evaluation import markdown

    rows = []
    for c in range(6):
        for m in ("linear", "other"):
            rows.append(_row(protocol="lax-holdout", case=f"c{c}", method=m, frame=0, structure="lax_4ch", ncc=0.8))
            empty = m == "other" and c < 2
            rows.append(_row(protocol="lax-holdout", case=f"c{c}", method=m, frame=0, structure="lv_cavity@4ch",
                             dice=0.0 if empty else 0.9, hd95=float("nan") if empty else 3.0,
                             note="empty prediction" if empty else ""))
            rows.append(_row(protocol="lax-holdout", case=f"c{c}", method=m, frame=0, structure="rv_cavity@4ch",
                             dice=float("nan"), hd95=float("nan"), note="absent from both"))
    path = write_csv(rows, tmp_path / "results.csv")
    assert "nan" not in path.read_text().lower()
    back = read_csv([path])
    s = summary(back)["lax-holdout"]
    labels = [x.label for x in s["measures"]]
    hd = labels.index("HD95 LV")
    assert s["cells"]["other"][hd][:2] == (3.0, 0.0) and s["cells"]["other"][hd][2] == 4  # 2 empty left out
    assert "Dice RV" not in labels  # absent from both everywhere: never a Dice 1
    assert s["empty"] == {"other": {"empty prediction": 2, "absent from both": 6},
                          "linear": {"absent from both": 6}}
    text = markdown({"lax-holdout": s})
    assert "Empty cases, reported apart" in text and "other: 6 absent from both, 2 empty prediction" in text


def test_no_not_distinguishable_mark_where_no_interval_was_computed():
    """Issue 29: a method compared on fewer than MIN_TEST values (no interval: 'too few') was shaded as
    'not distinguishable from the best', and a finding with nothing compared got the '=' mark."""
    from cardiorecon.report.evaluation import _verdict
    from cardiorecon.report.findings import Finding, near_best

    rows = [r for r in known_rows(cases=1, seed=3) if r["method"] in ("linear", "same")]  # 2 paired values
    assert compare(rows, SSIM, "same", "linear").verdict == "untested"
    assert near_best(rows, SSIM, ["same"], "linear") == set()
    assert _verdict(Finding(SSIM, "linear", "linear", 0.7, [])) == ""
