"""Issue 12: `evaluate` over a folder of subjects: a bad subject is listed, the others finish, rows are
written as each subject finishes; a DICOM study with series subfolders is one study."""

import csv

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from cardiorecon.cli import app


def _subject(folder, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 10, (24, 24, 5, 2)).astype(np.float32)
    data[8:16, 8:16, :, 0] += 200  # a "heart" that changes between the two frames
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 8.0, 1.0])), str(folder / "sa.nii.gz"))


def test_evaluate_finishes_the_others_and_lists_the_failure(tmp_path):
    data = tmp_path / "cohort"
    _subject(data / "a", 0)
    (data / "b").mkdir(parents=True)
    (data / "b" / "sa.nii.gz").write_bytes(b"not a nifti at all")
    _subject(data / "c", 1)
    (data / "notes").mkdir()
    (data / "notes" / "readme.txt").write_text("not a subject")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate", str(data), "--protocol", "slice-drop", "--methods", "linear",
                                   "--frames", "0", "--no-segmentation", "--align", "off", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with open(out / "results.csv") as fh:
        cases = {r["case"] for r in csv.DictReader(fh)}
    assert cases == {"a", "c"}
    with open(out / "failures.csv") as fh:
        failed = {r["case"]: r["error"] for r in csv.DictReader(fh)}
    assert set(failed) == {"b", "notes"}
    assert "sa.nii.gz" in failed["b"] and failed["notes"].startswith("skipped")
    assert "b" in (out / "report.html").read_text()


def test_evaluate_with_every_case_failing_is_a_clean_error(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sa.nii.gz").write_bytes(b"junk")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "b"), "--protocol", "slice-drop", "--methods",
                                   "linear", "--no-segmentation", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "sa.nii.gz" in res.output
