"""Quality control (issue 27): each rule fires on its constructed failure and not on a good phantom;
the two runs of the issue are flagged; bad input (all-zero ED stack, constant frame, a LAX view far from
the stack, a static cine) is flagged, never passed as done."""

import json

import nibabel as nib
import numpy as np
import pytest

from cardiorecon import qc
from cardiorecon.volume import Volume

GOOD_FN = {"lv_edv_ml": 140.0, "lv_esv_ml": 58.0, "lv_sv_ml": 82.0, "lv_ef": 58.6, "lv_mass_g": 95.0,
           "rv_edv_ml": 150.0, "rv_esv_ml": 68.0, "rv_sv_ml": 82.0, "rv_ef": 54.7}


def heart_labels(X=48, Y=48, Z=30, T=4, rv=True, myo=True):
    """Biventricular labels: LV cavity disc, myocardium ring, RV crescent beside it, on slices 5..24."""
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    out = np.zeros((X, Y, Z, T), np.uint8)
    for t in range(T):
        r = 7 - t % 2
        d = np.hypot(ii - 22, jj - 24)
        sl = np.zeros((X, Y), np.uint8)
        if rv:
            sl[(np.hypot(ii - 34, jj - 24) < 9) & (d >= r + 4)] = 3
        if myo:
            sl[(d >= r) & (d < r + 4)] = 2
        sl[d < r] = 1
        out[:, :, 5:25, t] = sl[..., None]
    return out


def codes(flags):
    return {(f.rule, f.level) for f in flags}


# ----- numbers -----
def test_function_ranges_good_and_the_issue_runs():
    assert qc.check_function(GOOD_FN) == []
    # the M&Ms-2 run of the issue: LV EDV 21.3 mL, RV EDV 2.6 mL, LV EF 89.9 %, RV EF 9.6 %
    run1 = {"lv_edv_ml": 21.3, "lv_esv_ml": 2.15, "lv_sv_ml": 19.15, "lv_ef": 89.9, "rv_edv_ml": 2.6,
            "rv_esv_ml": 2.35, "rv_sv_ml": 0.25, "rv_ef": 9.6, "lv_mass_g": 60.0}
    f1 = qc.check_function(run1)
    assert max(f.level for f in f1) == "fail" and qc.QCReport(f1).status == "fail"
    text = " ".join(f.message for f in f1)
    assert "LV EDV 21.3" in text and "RV EDV 2.6" in text and "LV EF 89.9" in text
    # the UK Biobank run: LV EDV 53 mL, RV EDV 2.5 mL
    run2 = {**GOOD_FN, "lv_edv_ml": 53.0, "lv_esv_ml": 22.0, "lv_sv_ml": 31.0, "lv_ef": 58.5, "rv_edv_ml": 2.5,
            "rv_esv_ml": 1.0, "rv_sv_ml": 1.5, "rv_ef": 60.0}
    r2 = qc.QCReport(qc.check_function(run2))
    assert r2.status == "fail"
    assert any("LV EDV 53.0" in m for m in r2.reasons()) and any("RV EDV 2.5" in m for m in r2.reasons())
    # a blank ED frame: EDV 0, EF nan
    blank = {**GOOD_FN, "lv_edv_ml": 0.0, "lv_ef": float("nan")}
    assert qc.QCReport(qc.check_function(blank)).status == "fail"


def test_es_above_ed_and_stroke_volumes():
    flags = qc.check_function({**GOOD_FN, "lv_esv_ml": 150.0, "lv_sv_ml": -10.0, "lv_ef": 5.1})
    assert ("es_above_ed", "fail") in codes(flags)
    flags = qc.check_function({**GOOD_FN, "rv_sv_ml": 30.0, "rv_esv_ml": 120.0, "rv_ef": 20.0})
    assert ("stroke_volumes", "check") in codes(flags)


def test_curve_jumps():
    t = np.arange(20)
    smooth = {"lv_ml": 100 + 40 * np.cos(2 * np.pi * t / 20), "rv_ml": 110 + 40 * np.cos(2 * np.pi * t / 20)}
    assert qc.check_curves(smooth, list(range(20))) == []
    jumpy = {k: v.copy() for k, v in smooth.items()}
    jumpy["lv_ml"][7] = 10.0
    flags = qc.check_curves(jumpy, list(range(20)))
    assert ("curve_jump", "check") in codes(flags) and {f.frame for f in flags} >= {7}


# ----- input -----
def test_blank_and_constant_frames():
    rng = np.random.default_rng(0)
    data = rng.random((20, 20, 6, 4)).astype(np.float32)
    assert qc.check_input_frames(data) == []
    bad = data.copy()
    bad[..., 0] = 0  # all-zero ED stack
    bad[..., 2] = 0.5  # a constant frame
    flags = qc.check_input_frames(bad, source="sa.nii.gz")
    assert {(f.rule, f.level, f.frame) for f in flags} == {("blank_frame", "fail", 0), ("blank_frame", "fail", 2)}
    assert any("sa.nii.gz is blank" in f.message for f in flags) and any("constant" in f.message for f in flags)
    one = data.copy()
    one[:, :, 3, 1] = 0
    assert codes(qc.check_input_frames(one)) == {("blank_slice", "check")}


def beating(T=12, static=False, seed=0):
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    data = np.zeros((64, 64, 6, T), np.float32)
    for t in range(T):
        r = 10 if static else 10 + 4 * np.cos(2 * np.pi * t / T)
        data[..., t] = ((np.hypot(ii - 32, jj - 30) < r) * 1.0 + 0.2)[..., None]
    data += 0.02 * rng.standard_normal(data.shape).astype(np.float32)
    return Volume(data, np.diag([1.8, 1.8, 10.0, 1.0]))


def test_no_moving_tissue():
    flags, ratio = qc.check_motion(beating())
    assert flags == [] and ratio > qc.MOTION_MIN_RATIO
    flags, ratio = qc.check_motion(beating(static=True))
    assert codes(flags) == {("no_motion", "fail")} and ratio < qc.MOTION_MIN_RATIO


# ----- labels -----
def test_structures_good_missing_rv_missing_lv_and_open_cavity():
    assert qc.check_structures(heart_labels())[0] == []
    flags, _ = qc.check_structures(heart_labels(rv=False))
    assert ("rv_missing", "fail") in codes(flags)
    partial = heart_labels()
    partial[:, :, 10:16][partial[:, :, 10:16] == 3] = 0  # RV gone on 6 of 10 mid slices
    flags, _ = qc.check_structures(partial)
    assert ("rv_missing", "fail") in codes(flags) or ("rv_missing", "check") in codes(flags)
    no_lv = heart_labels()
    no_lv[no_lv == 1] = 0
    assert ("lv_missing", "fail") in codes(qc.check_structures(no_lv)[0])
    flags, s = qc.check_structures(heart_labels(myo=False))
    assert ("enclosure", "fail") in codes(flags) and max(s["enclosure"]) < 0.1


def test_acquired_against_dense():
    dense = heart_labels(Z=31)
    acquired = dense[:, :, ::5]
    good = qc.acquired_agreement(acquired, qc.interpolate_labels(acquired, 5), 5, [2.0, 2.0, 2.0])
    assert qc.check_acquired_agreement(good, [0, 1, 2, 3]) == []
    assert min(good["dice_acquired"]) == 1.0
    bad = dense.copy()
    bad[:, :, 1::5] = 0  # the dense volume loses the heart on new slices
    bad[:, :, 2::5] = 0
    bad[:, :, 3::5] = 0
    agreement = qc.acquired_agreement(acquired, bad, 5, [2.0, 2.0, 2.0])
    assert any(f.rule == "acquired_vs_dense" for f in qc.check_acquired_agreement(agreement, [0, 1, 2, 3]))


def test_lax_agreement_rule():
    assert qc.check_lax_agreement({"4ch": [0.9, 0.85], "2ch": [0.6]}) == []
    assert codes(qc.check_lax_agreement({"4ch": [0.05, 0.02]})) == {("lax_agreement", "fail")}
    assert codes(qc.check_lax_agreement({"2ch": [0.2]})) == {("lax_agreement", "check")}


def test_predicted_quality_score():
    image = beating(T=1).data[..., 0] * 2 - 1
    stable = qc.perturbation_agreement(lambda im: (im > 0).astype(np.uint8), image)
    assert stable["score"] > 0.95 and qc.check_score(stable["score"]) == []
    rng = np.random.default_rng(1)
    unstable = qc.perturbation_agreement(lambda im: rng.integers(0, 4, im.shape).astype(np.uint8), image)
    assert unstable["score"] < 0.5 and codes(qc.check_score(unstable["score"])) == {("predicted_quality", "fail")}


def test_report_status_reasons_and_row():
    r = qc.QCReport()
    assert r.status == "ok" and r.row()["qc"] == "ok" and r.row()["qc_reasons"] == ""
    r.add([qc.Flag("a", "check", "look"), qc.Flag("b", "fail", "broken", 3), qc.Flag("b", "fail", "broken", 4)])
    assert r.status == "fail" and r.reasons() == ["broken", "look"]
    assert r.frame_status() == {3: "fail", 4: "fail"}
    assert json.loads(json.dumps(r.to_json()))["status"] == "fail"


# ----- on phantoms, end to end -----
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cardiorecon.phantom import generate_cohort

    root = tmp_path_factory.mktemp("qc_phantom")
    generate_cohort(root, 1, "healthy", seed=40, num_frames=4, progress=False, truth=False)
    return root / "healthy_0040"


def test_lax_view_far_from_the_stack_is_named_and_ignored(phantom, tmp_path):
    from cardiorecon.io import read_study

    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(phantom, moved)
    img = nib.load(moved / "la_4ch.nii.gz")
    a = img.affine.copy()
    normal = np.cross(a[:3, 0], a[:3, 1])
    a[:3, 3] += 500.0 * normal / np.linalg.norm(normal)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), a), moved / "la_4ch.nii.gz")
    study = read_study(moved)
    assert qc.lax_outside_stack(read_study(phantom)) == {}
    notes = qc.drop_lax_outside_stack(study)
    assert "4ch" not in study.lax and set(study.lax) == {"2ch", "3ch"}
    assert len(notes) == 1 and "la_4ch.nii.gz" in notes[0] and " mm from" in notes[0] and "ignored" in notes[0]


@pytest.mark.usefixtures("one_thread")
def test_cohort_subject_qc_ok_then_bad_input_flagged(phantom, tmp_path):
    """The good phantom passes (qc ok, in result.json, cohort.csv's columns and the page); the same subject
    with an all-zero ED stack, or with one constant frame, is flagged fail, never passed as done."""
    import shutil

    from cardiorecon.cohort import COLUMNS, CohortOptions, run_subject

    opts = CohortOptions(method="linear", torch_threads=1, meshes=False)
    res = run_subject(phantom, tmp_path / "good", opts)
    assert res.row["qc"] == "ok", res.row["qc_reasons"]
    assert {"qc", "qc_reasons", "qc_score"} <= set(COLUMNS) and COLUMNS.index("qc") < COLUMNS.index("lv_edv_ml")
    result = json.loads((tmp_path / "good" / "result.json").read_text())
    assert result["qc"]["status"] == "ok" and result["qc"]["score"] > qc.SCORE_CHECK
    assert set(result["qc"]["measures"]["lax_ncc"]) == {"2ch", "3ch", "4ch"}
    page = (tmp_path / "good" / "subject.html").read_text()
    assert "Quality control: ok" in page and "nv-viewer" in page and "Content-Security-Policy" in page
    assert (tmp_path / "good" / "thumb.png").is_file()

    for name, change in (("zero_ed", lambda d: d.__setitem__((..., 0), 0)),
                         ("constant", lambda d: d.__setitem__((..., 2), 7.0))):
        bad = tmp_path / name
        shutil.copytree(phantom, bad)
        img = nib.load(bad / "sa.nii.gz")
        data = np.asarray(img.dataobj).astype(np.float32)
        change(data)
        nib.save(nib.Nifti1Image(data, img.affine), bad / "sa.nii.gz")
        row = run_subject(bad, tmp_path / f"out_{name}", opts).row
        assert row["qc"] == "fail", (name, row)
        assert ("blank" if name == "zero_ed" else "constant") in row["qc_reasons"]


def test_segment_command_says_qc_fail_on_an_all_zero_ed_stack(phantom, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from cardiorecon.cli import app

    bad = tmp_path / "zero_ed"
    shutil.copytree(phantom, bad)
    img = nib.load(bad / "sa.nii.gz")
    data = np.asarray(img.dataobj).astype(np.float32)
    data[..., 0] = 0
    nib.save(nib.Nifti1Image(data, img.affine), bad / "sa.nii.gz")
    res = CliRunner().invoke(app, ["segment", str(bad), "--out", str(tmp_path / "seg"), "--device", "cpu",
                                   "--align", "off"])
    assert res.exit_code == 0, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("qc ")]
    assert len(line) == 1 and line[0].startswith("qc fail") and "sa.nii.gz is blank (all zero) in frame 0" in line[0]


def test_warnings_are_one_line_and_only_when_they_matter(tmp_path):
    import warnings

    from cardiorecon.errors import use_one_line_warnings
    from cardiorecon.io.nifti import write_nifti

    slight = np.diag([1.8, 1.8, 10.0, 1.0])
    slight[0, 2] = 1e-4  # a shear far below a voxel: no "0.00 mm" note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_nifti(Volume(np.zeros((4, 4, 3), np.float32), slight), tmp_path / "a.nii.gz")
    assert not [w for w in caught if "qform" in str(w.message)]
    sheared = np.diag([1.8, 1.8, 10.0, 1.0])
    sheared[0, 2] = 3.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_nifti(Volume(np.zeros((8, 8, 6), np.float32), sheared), tmp_path / "b.nii.gz")
    msgs = [str(w.message) for w in caught if "qform" in str(w.message)]
    assert len(msgs) == 1 and "b.nii.gz" in msgs[0]
    saved = warnings.formatwarning
    try:
        use_one_line_warnings()
        text = warnings.formatwarning(msgs[0], UserWarning, "/x/nifti.py", 196, "    warnings.warn(...)")
    finally:
        warnings.formatwarning = saved
    assert text == f"warning: {msgs[0]}\n" and "nifti.py" not in text
