"""The cohort runner: run_subject alone, a 2-worker LocalCluster over 3 phantoms and a corrupt subject,
resume from the markers, meshes, temporal segmentation, and the device option."""

import csv
import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cardiorecon.cli import app
from cardiorecon.cohort import (COLUMNS, MARKER, CohortOptions, load_models, read_marker, run_cohort, run_subject,
                                segment_4d)
from cardiorecon.device import resolve_device
from cardiorecon.errors import CardioReconError
from cardiorecon.phantom import generate_cohort

FAST = CohortOptions(method="linear", torch_threads=1)


@pytest.fixture(scope="module")
def cohort_data(tmp_path_factory):
    """Three 4-frame phantom subjects (no dense truth: not needed) and one corrupt subject."""
    root = tmp_path_factory.mktemp("cohort_data")
    generate_cohort(root, 3, "healthy", seed=40, num_frames=4, progress=False, truth=False)
    bad = root / "corrupt_0000"
    bad.mkdir()
    (bad / "sa.nii.gz").write_bytes(b"this is not a NIfTI file")
    return root


def read_rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_run_subject_alone(cohort_data, tmp_path):
    out = tmp_path / "healthy_0040"
    res = run_subject(cohort_data / "healthy_0040", out, FAST)
    row = res.row
    assert row["status"] == "done" and row["frames"] == 4
    for name in ("recon_linear.nii.gz", "recon_linear_native.nii.gz", "seg_linear.nii.gz", "seg_linear_native.nii.gz",
                 "volumes.csv", "volumes.png", "subject.html", "result.json", "meshes/lv_endo_ed.stl",
                 "meshes/lv_epi_es.ply", "meshes/rv_es.stl"):
        assert (out / name).is_file(), name
    # the marker is written last
    newest = max(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    assert (out / MARKER).stat().st_mtime_ns >= newest
    # clinical numbers agree with the curve and with each other
    with open(out / "volumes.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert len(curve) == 4
    lv = [float(r["lv_ml"]) for r in curve]
    assert row["lv_edv_ml"] == pytest.approx(max(lv), abs=1e-3) and row["lv_esv_ml"] == pytest.approx(min(lv), abs=1e-3)
    assert row["lv_sv_ml"] == pytest.approx(row["lv_edv_ml"] - row["lv_esv_ml"])
    assert row["lv_ef"] == pytest.approx(100 * row["lv_sv_ml"] / row["lv_edv_ml"])
    assert 30 < row["lv_ef"] < 85 and row["lv_mass_g"] > 20
    # meshes: watertight, enclosed volume within 2 % of the voxel volume
    meshes = json.loads((out / "result.json").read_text())["meshes"]
    assert {(m["structure"], m["phase"]) for m in meshes} == {(s, p) for s in ("lv_endo", "lv_epi", "rv")
                                                             for p in ("ED", "ES")}
    for m in meshes:
        assert m["watertight"], m
        assert abs(m["volume_error_pct"]) < 2.0, m
    assert row["meshes_watertight"] is True and row["mesh_max_error_pct"] < 2.0


@pytest.mark.parametrize("frames", ["ed", "ed,es"])
def test_run_subject_with_ed_only_has_no_ef_and_with_ed_es_has_one(cohort_data, tmp_path, frames):
    """Issue 29: `--frames ed` reported LV EF 0 with ESV = EDV (must be blank), and `--frames ed,es` was
    accepted and then failed on every subject with a ValueError."""
    import dataclasses

    out = tmp_path / frames.replace(",", "_")
    row = run_subject(cohort_data / "healthy_0041", out, dataclasses.replace(FAST, frames=frames)).row
    assert row["status"] == "done"
    if frames == "ed":
        assert row["frames"] == 1 and row["lv_edv_ml"] > 0 and row["lv_mass_g"] > 0
        for k in ("lv_esv_ml", "lv_sv_ml", "lv_ef", "rv_esv_ml", "rv_ef"):
            assert np.isnan(row[k]), (k, row[k])
        assert row["es_frame"] == ""
        result = json.loads((out / "result.json").read_text())  # valid JSON: null, not NaN
        assert result["row"]["lv_ef"] is None
        assert {m["phase"] for m in result["meshes"]} == {"ED"}
        from cardiorecon.cohort import write_cohort_csv

        (back,) = read_rows(write_cohort_csv([row], tmp_path / "cohort.csv"))
        assert back["lv_ef"] == "" and back["lv_esv_ml"] == "" and float(back["lv_edv_ml"]) > 0
    else:
        assert row["frames"] == 2 and 30 < row["lv_ef"] < 85 and row["lv_esv_ml"] < row["lv_edv_ml"]


def test_cohort_two_workers_failure_and_resume(cohort_data, tmp_path):
    out = tmp_path / "run"
    run = run_cohort([cohort_data], out, FAST, workers=2, progress=False, echo=lambda s: None)
    rows = read_rows(out / "cohort.csv")
    assert [r["subject"] for r in rows] == ["corrupt_0000", "healthy_0040", "healthy_0041", "healthy_0042"]
    status = {r["subject"]: r for r in rows}
    assert run.done == 3 and run.failed == 1 and run.skipped == 0
    bad = status["corrupt_0000"]
    assert bad["status"] == "failed" and "sa.nii.gz" in bad["error"] and "NIfTI" in bad["error"]
    assert not (out / "subjects" / "corrupt_0000" / MARKER).exists()
    assert (out / "subjects" / "corrupt_0000" / "failed.json").is_file()
    done = [r for r in rows if r["status"] == "done"]
    assert all(r["lv_ef"] and r["lv_mass_g"] and r["seconds"] for r in done)
    # two worker processes at most, each loaded the models once
    assert 1 <= len({r["worker"] for r in done}) <= 2
    assert all(r["models_loaded"] == "1" for r in done)
    assert "corrupt_0000" in (out / "cohort.html").read_text()
    # rerun, through the command line: the three done subjects are skipped (markers untouched), the
    # failed one is retried and listed
    markers = {n: (out / "subjects" / n / MARKER).stat().st_mtime_ns for n in status if n != "corrupt_0000"}
    result = CliRunner().invoke(app, ["cohort", str(cohort_data), "--out", str(out), "--method", "linear",
                                      "--workers", "2", "--torch-threads", "1", "--device", "cpu"])
    assert result.exit_code == 1, result.output  # some subjects failed (issue 29: documented exit codes)
    assert "3 done (3 from earlier runs), 1 failed" in result.output
    assert "FAILED corrupt_0000" in result.output
    assert {n: (out / "subjects" / n / MARKER).stat().st_mtime_ns for n in markers} == markers
    again = {r["subject"]: r for r in read_rows(out / "cohort.csv")}
    assert all(again[n]["resumed"] == "True" and again[n]["lv_ef"] == status[n]["lv_ef"] for n in markers)
    # other options would not give the same outputs: their marker does not count as done
    folder = out / "subjects" / "healthy_0040"
    assert read_marker(folder, FAST)["resumed"] is True
    assert read_marker(folder, CohortOptions(method="nearest")) is None
    assert read_marker(folder, CohortOptions(method="linear", device="auto", torch_threads=2)) is not None


def test_segment_4d_temporal_modes(cohort_data):
    from cardiorecon.segment import DEFAULT_SEGNET

    # a crop network on the working grid (the cohort's default is now the whole-field one)
    net = load_models(dataclasses.replace(FAST, seg_weights=str(DEFAULT_SEGNET))).segnet
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(0, 0.5, (64, 64, 6)), -1, 1).astype(np.float32)
    still = np.repeat(frame[..., None], 5, axis=3)  # no motion: smoothing along time changes nothing
    ref = segment_4d(net, still, "none")
    for mode in ("probability", "intensity"):
        assert np.array_equal(segment_4d(net, still, mode, sigma=1.0), ref)
    moving = np.stack([np.roll(frame, 3 * t, axis=0) for t in range(5)], axis=3)
    assert segment_4d(net, moving, "probability", sigma=1.0).shape == (64, 64, 6, 5)
    # per frame, it is the segmenter's own labelling, on the window and on a larger working grid
    from cardiorecon.segment import segment_array

    wide = np.pad(moving, ((8, 8), (8, 8), (0, 0), (0, 0)), constant_values=-1)
    for d in (moving, wide):
        assert np.array_equal(segment_4d(net, d, "none"), segment_array(net, d))
    with pytest.raises(ValueError):
        segment_4d(net, still, "bogus")


def test_segment_4d_window_network_frame_by_frame():
    """A whole-field window segmenter (labels only): frames segmented through segment_array, and
    'probability' smoothing falls back to per-frame labels with a note."""
    from cardiorecon.models.segnet import SegConfig, SegNet
    from cardiorecon.segment import segment_array

    torch.manual_seed(0)
    net = SegNet(SegConfig(name="w", image_size=32, pixel_spacing_mm=2.0, features=(4, 4, 8, 8, 16, 4),
                           inference="window")).eval()
    rng = np.random.default_rng(1)
    data = np.clip(rng.normal(0, 0.5, (40, 40, 3, 3)), -1, 1).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    notes = []
    labels = segment_4d(net, data, "probability", 1.0, affine=affine, notes=notes)
    assert labels.shape == data.shape and labels.dtype == np.uint8
    assert all(np.array_equal(labels[..., t], segment_array(net, data[..., t], affine)) for t in range(3))
    assert notes and "window" in notes[0]


def test_device_cuda_refused_without_cuda_and_auto_is_cpu(cohort_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto resolves to CUDA on this machine")
    for cmd in (["reconstruct", str(cohort_data / "healthy_0041"), "--method", "linear"],
                ["segment", str(cohort_data / "healthy_0041")]):
        bad = CliRunner().invoke(app, [*cmd, "--device", "cuda", "--out", str(tmp_path / "x")])
        assert bad.exit_code == 2 and "no CUDA device" in bad.output, bad.output
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(CardioReconError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(CardioReconError, match="device"):
        resolve_device("tpu")


@pytest.mark.slow  # 95 s on 2 cores (segment and a cohort subject twice each): `make test-slow`
def test_device_cpu_and_auto_give_the_same_outputs(cohort_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto resolves to CUDA on this machine")
    runs = {}
    for dev in ("cpu", "auto"):
        res = CliRunner().invoke(app, ["segment", str(cohort_data / "healthy_0041"), "--frames", "0", "--align", "off",
                                       "--device", dev, "--out", str(tmp_path / f"seg_{dev}")])
        assert res.exit_code == 0, res.output
        runs[dev] = np.asarray(nib.load(tmp_path / f"seg_{dev}" / "seg_sa.nii.gz").dataobj)
    assert runs["cpu"].any() and np.array_equal(runs["cpu"], runs["auto"])
    a = run_subject(cohort_data / "healthy_0041", tmp_path / "cpu", CohortOptions(method="linear", device="cpu"))
    b = run_subject(cohort_data / "healthy_0041", tmp_path / "auto", CohortOptions(method="linear", device="auto"))
    assert a.row["device"] == b.row["device"] == "cpu"
    for name in ("recon_linear.nii.gz", "seg_linear.nii.gz"):
        assert np.array_equal(np.asarray(nib.load(tmp_path / "cpu" / name).dataobj),
                              np.asarray(nib.load(tmp_path / "auto" / name).dataobj)), name
    assert {k: a.row[k] for k in ("lv_edv_ml", "lv_esv_ml", "rv_ef")} == {k: b.row[k] for k in ("lv_edv_ml", "lv_esv_ml", "rv_ef")}


def test_worker_warnings_are_one_line(tmp_path, capfd):
    """A warning raised inside a cohort worker process (here: a NIfTI without sform/qform codes) reaches
    the console as the command's one line naming the file, not Python's format with a source line."""
    subject = tmp_path / "data" / "nocodes"
    subject.mkdir(parents=True)
    img = nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 1), dtype=np.float32), np.eye(4))
    img.set_sform(np.eye(4), code=0)
    img.set_qform(np.eye(4), code=0)
    nib.save(img, subject / "sa.nii.gz")
    result = CliRunner().invoke(app, ["cohort", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--method",
                                      "linear", "--workers", "1", "--torch-threads", "1", "--device", "cpu"])
    assert result.exit_code == 3, result.output  # the one subject failed (one slice)
    err = capfd.readouterr().err
    assert "sform and qform codes are both 0" in err, err
    line = next(x for x in err.splitlines() if "sform and qform codes are both 0" in x)
    assert line.startswith("warning: ") and "sa.nii.gz" in line
    assert "warnings.warn(" not in err and "GeometryWarning:" not in err
