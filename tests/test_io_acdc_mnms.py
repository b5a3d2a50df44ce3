"""Readers of ACDC (the NIfTI layout with or without the cine, the HDF5 copies without geometry) and
M&Ms-1 (issue 25)."""

import h5py
import nibabel as nib
import numpy as np
import pytest

from cardiorecon.errors import InputError
from cardiorecon.io import read_study
from cardiorecon.io.acdc_h5 import read_acdc_h5
from conftest import oblique_affine


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def _acdc_gt():
    gt = np.zeros((5, 6, 2), np.uint8)
    gt[0, 0, 0], gt[1, 1, 0], gt[2, 2, 1] = 1, 2, 3  # ACDC: 1 RV, 2 myo, 3 LV
    return gt


def _acdc_frames_only(folder, affine, ed=1, es=12):
    for n in (ed, es):
        _save(folder / f"patient007_frame{n:02d}.nii.gz", np.random.rand(5, 6, 2).astype(np.float32) + n, affine)
        _save(folder / f"patient007_frame{n:02d}_gt.nii.gz", _acdc_gt(), affine)


def test_acdc_without_cine_reads_ed_es_extracts(tmp_path):
    a = oblique_affine()
    _acdc_frames_only(tmp_path, a)
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\n")
    study = read_study(tmp_path)
    assert study.sax.shape == (5, 6, 2, 2) and (study.ed_frame, study.es_frame) == (0, 1)
    assert study.sax.data[..., 1].min() >= 12  # frame12 is the second frame
    np.testing.assert_allclose(study.sax.affine, a, atol=1e-5)
    lab = study.sax_labels.data
    assert (lab[0, 0, 0, 0], lab[1, 1, 0, 0], lab[2, 2, 1, 0]) == (3, 2, 1)  # remapped to 1 LV, 2 myo, 3 RV
    assert study.meta["labelled_frames"] == [0, 1] and study.meta["acdc_frames"] == [1, 12]


def test_acdc_info_cfg_naming_a_missing_frame_is_refused(tmp_path):
    _acdc_frames_only(tmp_path, np.diag([1.5, 1.5, 10, 1]))
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 9\n")
    with pytest.raises(InputError, match=r"Info\.cfg.*ES: 9 names a frame that does not exist \(frames 1, 12\)"):
        read_study(tmp_path)
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 9\n")
    _save(tmp_path / "patient007_4d.nii.gz", np.random.rand(5, 6, 2, 8).astype(np.float32), np.diag([1.5, 1.5, 10, 1]))
    with pytest.raises(InputError, match=r"ES: 9 names a frame that does not exist \(frames 1\.\.8\)"):
        read_study(tmp_path)


def test_acdc_gt_on_another_grid_is_refused(tmp_path):
    a = np.diag([1.5, 1.5, 10, 1])
    _acdc_frames_only(tmp_path, a)
    _save(tmp_path / "patient007_frame01_gt.nii.gz", np.zeros((5, 7, 2), np.uint8), a)
    _save(tmp_path / "patient007_frame12_gt.nii.gz", np.zeros((5, 7, 2), np.uint8), a)
    with pytest.raises(InputError, match=r"patient007_frame01_gt\.nii\.gz.*does not match the image"):
        read_study(tmp_path)


def test_acdc_labels_outside_0_3_are_refused(tmp_path):
    a = np.diag([1.5, 1.5, 10, 1])
    _acdc_frames_only(tmp_path, a)
    bad = _acdc_gt()
    bad[3, 3, 0] = 5
    _save(tmp_path / "patient007_frame12_gt.nii.gz", bad, a)
    with pytest.raises(InputError, match=r"patient007_frame12_gt\.nii\.gz.*label values must be 0\.\.3"):
        read_study(tmp_path)


def _mnms1(folder, code="A0S9V9", T=8, ed=0, es=5):
    a = oblique_affine()
    sub = folder / "Training" / "Labeled" / code
    sub.mkdir(parents=True)
    _save(sub / f"{code}_sa.nii.gz", np.random.rand(6, 6, 3, T).astype(np.float32), a)
    gt = np.zeros((6, 6, 3, T), np.uint8)
    gt[1, 1, 1, ed], gt[2, 2, 1, es] = 1, 3  # M&Ms-1 labels are already 1 LV, 2 myo, 3 RV
    _save(sub / f"{code}_sa_gt.nii.gz", gt, a)
    return sub, a


def test_mnms1_layout_ed_es_from_the_metadata_csv(tmp_path):
    sub, a = _mnms1(tmp_path)
    (tmp_path / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").write_text(
        ",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight\n"
        "0,B0X1Y2,Siemens,A,1,0,9,50,NOR,M,180,80\n1,A0S9V9,Siemens,A,1,0,5,61,HCM,F,165,60\n")
    study = read_study(sub)
    assert study.meta["format"] == "mnms1" and study.meta["subject"] == "A0S9V9"
    assert (study.ed_frame, study.es_frame) == (0, 5)
    assert study.meta["labelled_frames"] == [0, 5]
    assert study.sax_labels.data[1, 1, 1, 0] == 1 and study.sax_labels.data[2, 2, 1, 5] == 3
    np.testing.assert_allclose(study.sax.affine, a, atol=1e-5)


def test_mnms1_without_csv_keeps_es_unknown(tmp_path):
    sub, _ = _mnms1(tmp_path)
    study = read_study(sub)
    assert (study.ed_frame, study.es_frame) == (0, None)
    assert any("no M&Ms metadata CSV" in n for n in study.meta["notes"])


def _h5(path, image, label=None):
    with h5py.File(path, "w") as fh:
        fh["image"] = image
        if label is not None:
            fh["label"] = label


def test_acdc_hdf5_both_forms_say_they_have_no_geometry(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 6)).astype(np.float32)
    lab = np.zeros((3, 8, 6), np.uint8)
    lab[1, 2, 2], lab[1, 4, 4] = 1, 3  # ACDC: 1 RV, 3 LV
    stack_dir, slice_dir = tmp_path / "stack", tmp_path / "slices"
    stack_dir.mkdir(), slice_dir.mkdir()
    for f in (1, 2):
        _h5(stack_dir / f"patient004_frame0{f}.h5", img, lab)
        for s in range(3):
            _h5(slice_dir / f"patient004_frame0{f}_slice_{s + 1}.h5", img[s], lab[s])
    a, b = read_acdc_h5(stack_dir), read_acdc_h5(slice_dir)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.labels, fb.labels)
    assert a[0].labels[1, 2, 2] == 3 and a[0].labels[1, 4, 4] == 1  # remapped to 3 RV, 1 LV
    study = read_study(slice_dir)
    assert study.meta["geometry"] is False and study.meta["format"] == "acdc-h5"
    assert any("no geometry" in n for n in study.meta["notes"])
    assert study.sax.shape == (8, 6, 3, 2) and (study.ed_frame, study.es_frame) == (0, 1)
    one = read_study(stack_dir / "patient004_frame02.h5")
    assert one.num_frames == 1 and one.es_frame == 0 and one.ed_frame is None


def test_acdc_hdf5_without_label_is_refused(tmp_path):
    _h5(tmp_path / "patient004_frame01.h5", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match=r"patient004_frame01\.h5.*missing label"):
        read_study(tmp_path / "patient004_frame01.h5")


def test_acdc_hdf5_folder_of_several_patients_is_refused(tmp_path):
    for p in (4, 5):
        _h5(tmp_path / f"patient00{p}_frame01.h5", np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="HDF5 files of 2 patients"):
        read_study(tmp_path)


def _bad_acdc(kind, folder):
    """One bad ACDC input per kind: the path given to `cardiorecon segment` and the file its error names."""
    a = np.diag([1.5, 1.5, 10, 1])
    if kind == "hdf5 without label":
        _h5(folder / "patient004_frame01.h5", np.zeros((2, 4, 4), np.float32))
        return folder / "patient004_frame01.h5", "patient004_frame01.h5"
    _acdc_frames_only(folder, a)
    if kind == "Info.cfg frame":
        (folder / "Info.cfg").write_text("ED: 1\nES: 9\n")
        return folder, "Info.cfg"
    (folder / "Info.cfg").write_text("ED: 1\nES: 12\n")
    if kind == "gt grid":
        _save(folder / "patient007_frame01_gt.nii.gz", np.zeros((5, 7, 2), np.uint8), a)
        return folder, "patient007_frame01_gt.nii.gz"
    bad = _acdc_gt()
    bad[3, 3, 0] = 5
    _save(folder / "patient007_frame12_gt.nii.gz", bad, a)
    return folder, "patient007_frame12_gt.nii.gz"


@pytest.mark.parametrize("kind", ["gt grid", "Info.cfg frame", "labels outside 0-3", "hdf5 without label"])
def test_segment_command_on_bad_acdc_input_is_one_line_exit_2_nothing_written(tmp_path, kind):
    from typer.testing import CliRunner

    from cardiorecon.cli import app

    subject = tmp_path / "subject"
    subject.mkdir()
    path, named = _bad_acdc(kind, subject)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output
    assert not out.exists()


def test_segment_command_writes_volumes_and_the_clinical_numbers(tmp_path):
    """`segment` on a study with geometry: function.csv per frame and the printed EDV/ESV/SV/EF/mass
    agree with study_function on the written labels; without geometry (ACDC HDF5) no mL at all."""
    from typer.testing import CliRunner

    from cardiorecon.cli import app
    from cardiorecon.metrics.function import study_function
    from cardiorecon.phantom.acquire import generate_cohort

    subj = generate_cohort(tmp_path / "ph", 1, "healthy", seed=40, num_frames=4, progress=False, truth=False)[0]
    study = read_study(subj)
    frames = sorted({study.ed_frame, study.es_frame})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(subj), "--frames", "ed,es", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lab = nib.load(str(out / "seg_sa.nii.gz"))
    rows, summary = study_function(np.asarray(lab.dataobj), lab.header.get_zooms()[:3], frames,
                                   study.ed_frame, study.es_frame)
    text = (out / "function.csv").read_text().splitlines()
    assert text[0] == "frame,phase,lv_ml,rv_ml,lv_myo_ml,lv_mass_g" and len(text) == 3
    assert float(text[1].split(",")[2]) == pytest.approx(rows[0]["lv_ml"], abs=1e-3)
    assert f"EDV {summary['lv_edv_ml']:.1f} mL" in result.output and summary["lv_edv_ml"] > 0
    assert "qc " in result.output

    h5dir = tmp_path / "h5"
    h5dir.mkdir()
    _h5(h5dir / "patient004_frame01.h5", np.random.rand(3, 40, 40).astype(np.float32), np.zeros((3, 40, 40), np.uint8))
    out2 = tmp_path / "out2"
    result = CliRunner().invoke(app, ["segment", str(h5dir / "patient004_frame01.h5"), "--out", str(out2)])
    assert result.exit_code == 0, result.output
    assert "no volumes: the input has no geometry" in result.output and " mL" not in result.output
    assert not (out2 / "function.csv").exists()


def test_acdc_hdf5_one_patient_of_a_folder_of_several(tmp_path):
    """`read_acdc_h5_study(folder, patient)`: that patient's frames from the shared folder (as
    benchmarks/bench_selfsr.py reads the hold-out); a patient with no file is refused."""
    from cardiorecon.io.acdc_h5 import read_acdc_h5_study

    for p in (4, 5):
        for f in (1, 2):
            _h5(tmp_path / f"patient00{p}_frame0{f}.h5", np.full((2, 4, 4), p + f / 10, np.float32),
                np.zeros((2, 4, 4), np.uint8))
    study = read_acdc_h5_study(tmp_path, 5)
    assert study.meta["subject"] == "patient005" and (study.ed_frame, study.es_frame) == (0, 1)
    np.testing.assert_allclose(study.sax.data[0, 0, 0], [5.1, 5.2])
    with pytest.raises(InputError, match="no HDF5 file of patient007"):
        read_acdc_h5_study(tmp_path, 7)
