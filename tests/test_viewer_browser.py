"""The pages in headless Chromium (issue 27): the subject page's viewer draws (canvas not blank), nothing
leaves the file, the cohort page puts QC first with thumbnails, and a subject whose outputs were deleted
shows a clear message, not a blank viewer. Run in CI (.ci/run installs chromium); skipped elsewhere only
when chromium is missing and CI is not set."""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import attr, chromium, open_page  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def browser():
    if chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI installs it")
    return chromium()


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """One 4-frame phantom run through `run_subject` (linear, meshes on): its folder and row."""
    import torch

    from cardiorecon.cohort import CohortOptions, run_subject
    from cardiorecon.phantom import generate_cohort

    root = tmp_path_factory.mktemp("viewer")
    generate_cohort(root / "data", 1, "healthy", seed=41, num_frames=4, progress=False, truth=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_subject(root / "data" / "healthy_0041", root / "out" / "subjects" / "healthy_0041",
                          CohortOptions(method="linear", torch_threads=1))
    finally:
        torch.set_num_threads(threads)
    return root / "out", res.row


def test_subject_page_viewer_draws_offline(browser, subject):
    out, row = subject
    page = out / "subjects" / "healthy_0041" / "subject.html"
    assert page.stat().st_size < 20e6
    html = page.read_text()
    # self-contained: no src/href to another host, NiiVue embedded once, the volumes embedded
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html)
    assert html.count("niivue={}") == 1 or "sA.niivue={}" in html
    res = open_page(page)
    dom = res["dom"]
    assert attr(dom, "data-state") == "drawn", res["stderr"][-2000:]
    assert float(attr(dom, "data-lit-share")) > 0.05  # the canvas is not blank
    assert attr(dom, "data-csp-violations") is None  # nothing was even attempted outside the file
    assert res["requests"] == []
    assert "frame 0" in dom and "of 4" in dom  # the frame slider's label


def test_cohort_page_qc_first_thumbnails_and_deleted_outputs(browser, subject, tmp_path):
    from cardiorecon.cohort import COLUMNS
    from cardiorecon.report.cohort import cohort_page, write_html

    out, row = subject
    cohort = tmp_path / "cohort"
    shutil.copytree(out, cohort)
    bad = {**row, "subject": "gone_0001", "qc": "check", "qc_reasons": "LV EDV 53.0 mL is below 65 mL"}
    (cohort / "subjects" / "gone_0001").mkdir()  # its outputs were deleted
    page = write_html(cohort / "cohort.html", cohort_page([row, bad], COLUMNS, "cohort", "two subjects", cohort))
    res = open_page(page)
    dom = res["dom"]
    assert res["requests"] == []
    heads = re.findall(r"<th scope=\"col\"[^>]*><button type=\"button\">([^<]*)</button>", dom)
    assert heads[0] == "QC" and heads[1] == "subject"
    assert "1 of 2 subjects needs a look (0 fail, 1 check)" in dom
    assert "outputs missing: deleted or moved" in dom
    assert re.search(r"<img src=\"data:image/png;base64,[^\"]+\" alt=\"mid-ventricular slice of healthy_0041\"", dom)
    assert "<h2>Distributions" not in dom and "drawn from 5 subjects" in dom  # n < 5
    assert "LV EDV ... mL is below ... mL: 1 subject" in dom


def test_deleted_outputs_show_a_message_not_a_blank_viewer(browser, subject, tmp_path):
    from cardiorecon.report.cohort import write_html
    from cardiorecon.report.viewer import outputs_page

    out, _ = subject
    folder = tmp_path / "healthy_0041"
    shutil.copytree(out / "subjects" / "healthy_0041", folder)
    ok = open_page(write_html(tmp_path / "ok.html", outputs_page(folder, "linear")))
    assert attr(ok["dom"], "data-state") == "drawn"
    for name in ("recon_linear.nii.gz", "seg_linear.nii.gz"):
        (folder / name).unlink()
    res = open_page(write_html(tmp_path / "gone.html", outputs_page(folder, "linear")))
    dom = res["dom"]
    assert attr(dom, "data-state") == "message"
    assert "are not there any more" in dom and "recon_linear.nii.gz" in dom and "deleted or moved" in dom
    assert res["requests"] == []


def test_no_webgl_shows_a_message(browser, subject):
    out, _ = subject
    res = open_page(out / "subjects" / "healthy_0041" / "subject.html", extra=["--disable-3d-apis"])
    dom = res["dom"]
    assert attr(dom, "data-state") == "message" and "no WebGL2" in dom


def test_evaluation_report_viewer(browser, tmp_path):
    """The evaluation report's viewer section (kept during `evaluate`): the input, each method and its
    labels for the first cases, drawn offline."""
    from types import SimpleNamespace

    import numpy as np

    from cardiorecon.io import read_study
    from cardiorecon.phantom import generate_cohort
    from cardiorecon.recon.pipeline import reconstruct
    from cardiorecon.report.page import build_page
    from cardiorecon.report.cohort import write_html
    from cardiorecon.report.viewer import evaluation_viewer_section, keep_evaluation, keep_evaluation_labels

    generate_cohort(tmp_path / "data", 1, "healthy", seed=42, num_frames=4, progress=False, truth=False)
    study = read_study(tmp_path / "data" / "healthy_0042")
    figures: dict = {}
    for method in ("nearest", "linear"):
        rec = reconstruct(study, method, factor=3, frames=[0, 1])
        keep_evaluation(figures, "healthy_0042", study, rec, method)
        for i, t in enumerate(rec.frames):
            labels = (rec.normalised.data[..., i] > 0.3).astype(np.uint8)  # a stand-in segmentation
            keep_evaluation_labels(figures, "healthy_0042", t, method, labels, labels)
    keep_evaluation(figures, "another", study, SimpleNamespace(frames=[0], normalised=rec.normalised), "x", 1)
    assert list(figures["viewer"]) == ["healthy_0042"]  # only the first max_cases cases
    section = evaluation_viewer_section(figures)
    html = section["html"]
    assert "nearest labels" in html and "reference labels" in html and "LAX 4ch" in html
    page = write_html(tmp_path / "report.html", build_page("evaluation", sections=[section]))
    res = open_page(page)
    assert attr(res["dom"], "data-state") == "drawn" and float(attr(res["dom"], "data-lit-share")) > 0.05
    assert res["requests"] == []
