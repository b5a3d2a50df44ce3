"""Bad inputs through the command line, as a new user would give them. Each case must end with
exit code 2, one line `error: ...` naming the file (or the option) and the problem, no traceback,
and no new file anywhere (nothing half-written)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardiorecon.cli import app
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject
from conftest import oblique_affine

RUNNER = CliRunner()
IDENTITY_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    acq = AcquisitionConfig(sax_matrix=48, lax_matrix=32)
    return write_subject(generate(sample_params(3, "healthy", num_frames=4), acq, truth=False), root / "subject")


# ----------------------------------------------------------------------------------- builders

def _copy(subject: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(subject, tmp / "subj"))


def _nifti(path: Path, data, affine=None, sform_code=1, qform_code=1) -> Path:
    affine = np.diag([1.8, 1.8, 10.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    nib.save(img, str(path))
    return path


def _replace_sa(subject, tmp, data, affine=None, **codes):
    folder = _copy(subject, tmp)
    _nifti(folder / "sa.nii.gz", data, affine, **codes)
    return folder


def _write_dicom(path: Path, ipp, iop=None, rows=6, cols=5, spacing=(1.4, 1.9), trigger=0.0, instance=1,
                 series="1.2.826.0.1.3680043.8.498.1", for_uid="1.2.826.0.1.3680043.8.498.9", value=100,
                 pixel_spacing=True, patient=None, study=None) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    sop = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.Modality = series, for_uid, "MR"
    if patient is not None:
        ds.PatientID = patient
    if study is not None:
        ds.StudyInstanceUID = study
    ds.Rows, ds.Columns = rows, cols
    if pixel_spacing:
        ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 8
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = list(IDENTITY_IOP if iop is None else iop)
    ds.TriggerTime, ds.InstanceNumber = trigger, instance
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(rows * cols).reshape(rows, cols) % 7 + value).astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def _dicom_cine(folder: Path, slices=3, frames=2, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        for t in range(frames):
            _write_dicom(folder / f"s{k}_t{t}.dcm", [10.0, 20.0, 30.0 + 10 * k], trigger=40.0 * t,
                         instance=1 + t + frames * k, value=100 + 10 * k + t, **kw)
    return folder


def _pickle(path: Path) -> Path:
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return path


# Each case: (id, build(subject, tmp) -> argv, texts the error line must contain).

def _info(folder):
    return ["info", str(folder)]


def _linear(folder, out, *extra):
    return ["reconstruct", str(folder), "--method", "linear", "--factor", "2", "--align", "off", "--no-native",
            "--out", str(out), *extra]


def c_missing(s, t):
    return _info(t / "nowhere")


def c_empty_folder(s, t):
    (t / "empty").mkdir()
    return _info(t / "empty")


def c_unrelated_folder(s, t):
    (t / "notes").mkdir()
    (t / "notes" / "readme.txt").write_text("hello")
    return _info(t / "notes")


def c_truncated_nifti(s, t):
    f = _copy(s, t)
    data = (f / "sa.nii.gz").read_bytes()
    (f / "sa.nii.gz").write_bytes(data[: len(data) // 3])
    return _info(f)


def c_not_gzip(s, t):
    f = _copy(s, t)
    (f / "sa.nii.gz").write_text("this is not a NIfTI file")
    return _info(f)


def c_2d_image(s, t):
    return _info(_replace_sa(s, t, np.ones((8, 8), np.float32)))


def c_5d_image(s, t):
    return _info(_replace_sa(s, t, np.ones((8, 8, 3, 4, 2), np.float32)))


def c_nan(s, t):
    d = np.random.default_rng(0).random((8, 8, 3, 4)).astype(np.float32)
    d[1, 1, 1, 1] = np.nan
    return _info(_replace_sa(s, t, d))


def c_inf(s, t):
    d = np.random.default_rng(0).random((8, 8, 3, 4)).astype(np.float32)
    d[2, 2, 2, 2] = np.inf
    return _info(_replace_sa(s, t, d))


def c_all_zero(s, t):
    f = _copy(s, t)
    img = nib.load(str(f / "sa.nii.gz"))
    _nifti(f / "sa.nii.gz", np.zeros(img.shape, np.float32), img.affine)
    return _info(f)


def c_blank_frame(method):
    """One blank frame of an otherwise good cine, asked for by --frames: refused, not a volume of zeros."""
    def build(s, t):
        f = _copy(s, t)
        img = nib.load(str(f / "sa.nii.gz"))
        data = np.asarray(img.dataobj).astype(np.float32)
        data[..., 1] = 0
        _nifti(f / "sa.nii.gz", data, img.affine)
        return ["reconstruct", str(f), "--method", method, "--frames", "1", "--align", "off", "--out", str(t / "o")]

    return build


def c_singular_affine(s, t):
    a = np.diag([1.8, 1.8, 10.0, 1.0])
    a[:3, 2] = a[:3, 0] / 1.8 * 10.0  # third axis along the first: degenerate
    return _info(_replace_sa(s, t, np.random.default_rng(0).random((8, 8, 3, 4)).astype(np.float32), a))


def c_qform_pixdim_zero(s, t):
    f = _copy(s, t)
    path = f / "sa.nii.gz"
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    _nifti(f / "sa.nii", data, np.diag([1.8, 1.8, 10.0, 1.0]), sform_code=0, qform_code=1)
    raw = bytearray((f / "sa.nii").read_bytes())
    raw[88:92] = struct.pack("<f", 0.0)  # pixdim[3]
    path.write_bytes(gzip.compress(bytes(raw)))
    (f / "sa.nii").unlink()
    return _info(f)


def c_labels_out_of_range(s, t):
    f = _copy(s, t)
    img = nib.load(str(f / "label_sa.nii.gz"))
    lab = np.asanyarray(img.dataobj).copy()
    lab.flat[0] = 7
    _nifti(f / "label_sa.nii.gz", lab, img.affine)
    return _info(f)


def c_labels_other_shape(s, t):
    f = _copy(s, t)
    img = nib.load(str(f / "label_sa.nii.gz"))
    _nifti(f / "label_sa.nii.gz", np.zeros((5, 5, 2), np.uint8), img.affine)
    return _info(f)


def c_lax_several_slices(s, t):
    f = _copy(s, t)
    img = nib.load(str(f / "la_2ch.nii.gz"))
    _nifti(f / "la_2ch.nii.gz", np.ones(img.shape[:2] + (3, 4), np.float32), img.affine)
    return _info(f)


def c_lax_parallel_to_sax(s, t):
    f = _copy(s, t)
    sa = nib.load(str(f / "sa.nii.gz"))
    affine = sa.affine.copy()
    affine[:3, 3] += affine[:3, 2] * 0.5  # between two SAX slices, in their orientation
    _nifti(f / "la_4ch.nii.gz", np.random.default_rng(1).random(sa.shape[:2] + (1, 4)).astype(np.float32), affine)
    return _info(f)


def c_subject_json_invalid(s, t):
    f = _copy(s, t)
    (f / "subject.json").write_text("{ed_frame: 0,")
    return _info(f)


def c_subject_json_list(s, t):
    f = _copy(s, t)
    (f / "subject.json").write_text("[1, 2, 3]")
    return _info(f)


def c_subject_json_ed_text(s, t):
    f = _copy(s, t)
    info = json.loads((f / "subject.json").read_text())
    info["ed_frame"] = "zero"
    (f / "subject.json").write_text(json.dumps(info))
    return _info(f)


def c_acdc_binary_info(s, t):
    f = t / "patient001"
    f.mkdir()
    rng = np.random.default_rng(0)
    _nifti(f / "patient001_4d.nii.gz", rng.random((8, 8, 3, 4)).astype(np.float32))
    (f / "Info.cfg").write_bytes(bytes(range(256)) * 4)
    return _info(f)


def c_3d_cine_with_time_units(s, t):
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 20)).astype(np.float32), np.diag([1.8, 1.8, 1, 1]))
    img.header.set_xyzt_units("mm", "msec")
    img.header["dim"][0] = 3
    img.set_sform(img.affine, code=1)
    nib.save(img, str(t / "cine.nii.gz"))
    return _info(t / "cine.nii.gz")


def c_dicom_truncated(s, t):
    f = _dicom_cine(t / "dcm")
    data = (f / "s1_t1.dcm").read_bytes()
    (f / "s1_t1.dcm").write_bytes(data[:200])
    return _info(f)


def c_dicom_missing_pixel_spacing(s, t):
    f = _dicom_cine(t / "dcm")
    _write_dicom(f / "s0_t0.dcm", [10.0, 20.0, 30.0], pixel_spacing=False, instance=1)
    return _info(f)


def c_dicom_mixed_sizes(s, t):
    f = _dicom_cine(t / "dcm")
    _write_dicom(f / "s2_t1.dcm", [10.0, 20.0, 50.0], rows=7, trigger=40.0, instance=6)
    return _info(f)


def c_dicom_two_frames_of_reference(s, t):
    f = _dicom_cine(t / "dcm", slices=4)
    for tt in range(2):
        _write_dicom(f / f"s3_t{tt}.dcm", [10.0, 20.0, 60.0], trigger=40.0 * tt, instance=7 + tt,
                     for_uid="1.2.826.0.1.3680043.8.498.77")
    return _info(f)


def c_dicom_duplicate_phase(s, t):
    f = _dicom_cine(t / "dcm")
    # another image at the same slice and phase (not a copy: another SOP instance)
    _write_dicom(f / "extra.dcm", [10.0, 20.0, 40.0], trigger=40.0, instance=4, value=500)
    return _info(f)


def c_dicom_missing_phase(s, t):
    f = _dicom_cine(t / "dcm", frames=3)
    (f / "s1_t1.dcm").unlink()
    return _info(f)


def c_dicom_two_patients(s, t):  # issue 29: the other patient's SAX became LAX views
    f = _dicom_cine(t / "dcm", patient="PAT-A", study="1.2.3.1")
    for k in range(2):
        _write_dicom(f / f"other_{k}.dcm", [10.0 + 10 * k, 20.0, 30.0], iop=[0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                     series="1.2.826.0.1.3680043.8.498.2", instance=1, patient="PAT-B", study="1.2.3.2")
    return _info(f)


def c_header_claims_1000_cubed(s, t):  # issue 29: 7.9 GB and 21 s before the refusal
    import io

    f = _copy(s, t)
    h = nib.Nifti1Header()
    h.set_data_shape((1000, 1000, 1000))
    h.set_data_dtype(np.float32)
    h.set_sform(np.diag([1.8, 1.8, 10.0, 1.0]), code=1)
    h["vox_offset"] = 352
    buf = io.BytesIO()
    h.write_to(buf)
    buf.write(b"\0" * (352 - buf.tell() + 4096))
    (f / "sa.nii.gz").write_bytes(gzip.compress(buf.getvalue()))
    return _info(f)


def c_report_on_png(s, t):  # issue 29: UnicodeDecodeError
    (t / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return ["report", str(t / "figure.png"), "--out", str(t / "merged")]


def c_spacing_and_factor(s, t):  # issue 29: one of them silently ignored
    return ["reconstruct", str(s), "--method", "linear", "--factor", "2", "--spacing", "5", "--align", "off",
            "--out", str(t / "out")]


def c_align_out_for(where):
    def build(s, t):
        if where == "file":
            (t / "taken").write_text("keep me")
            out = t / "taken"
        elif where == "proc":
            out = Path("/proc/cardiorecon_out")
        else:
            out = _copy(s, t) / "aligned"
            return ["align", str(out.parent), "--out", str(out)]
        return ["align", str(s), "--out", str(out)]

    return build


def c_cohort_out_for(where):
    def build(s, t):
        data = t / "data"
        data.mkdir()
        shutil.copytree(s, data / "subj")
        if where == "file":
            (t / "taken").write_text("keep me")
            out = t / "taken"
        elif where == "proc":
            out = Path("/proc/cardiorecon_out")
        else:
            out = data / "results"
        return ["cohort", str(data), "--method", "linear", "--out", str(out)]

    return build


def c_cohort_frames(text):
    def build(s, t):
        return ["cohort", str(s), "--method", "linear", "--frames", text, "--out", str(t / "out")]

    return build


def c_bad_frames_text(s, t):
    return _linear(s, t / "out", "--frames", "bogus")


def c_frame_out_of_range(s, t):
    return _linear(s, t / "out", "--frames", "9")


def c_frame_list_out_of_range(s, t):
    return _linear(s, t / "out", "--frames", "0,-7")


def c_frame_negative(s, t):  # issue 29: silently the last frame
    return ["reconstruct", str(s), "--method", "linear", "--factor", "2", "--align", "off", "--no-native",
            "--frames=-1", "--out", str(t / "out")]


def c_spacing_zero(s, t):
    return ["reconstruct", str(s), "--method", "linear", "--spacing", "0", "--align", "off", "--out", str(t / "out")]


def c_out_existing_file(s, t):
    (t / "taken").write_text("keep me")
    return _linear(s, t / "taken")


def c_out_is_input_folder(s, t):
    f = _copy(s, t)
    return ["segment", str(f), "--out", str(f)]


def c_out_read_only(s, t):
    ro = t / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return _linear(s, ro / "out")


def c_weights_pickle(s, t):
    _pickle(t / "w" / "model.safetensors")
    (t / "w" / "model.json").write_text(json.dumps({"config": {}}))
    return ["segment", str(s), "--weights", str(t / "w" / "model"), "--out", str(t / "out")]


def c_weights_corrupt_json(s, t):
    from cardiorecon.segment import DEFAULT_SEGNET

    src = Path(DEFAULT_SEGNET) / "model"
    shutil.copy(src.with_suffix(".safetensors"), t / "seg.safetensors")
    (t / "seg.json").write_text("{corrupt")
    return ["segment", str(s), "--weights", str(t / "seg"), "--out", str(t / "out")]


def c_csv_missing_columns(s, t):
    (t / "a").mkdir()
    (t / "a" / "results.csv").write_text("case,method\nx,linear\n")
    return ["report", str(t / "a" / "results.csv"), "--out", str(t / "merged")]


def c_csv_text_in_number(s, t):
    from cardiorecon.report.evaluation import COLUMNS

    (t / "a").mkdir()
    row = ["x"] * len(COLUMNS)
    (t / "a" / "results.csv").write_text(",".join(COLUMNS) + "\n" + ",".join(row) + "\n")
    return ["report", str(t / "a" / "results.csv"), "--out", str(t / "merged")]


def c_report_out_holds_input(s, t):
    from cardiorecon.report.evaluation import COLUMNS

    for d in ("a", "b"):
        (t / d).mkdir()
        (t / d / "results.csv").write_text(",".join(COLUMNS) + "\n")
    return ["report", str(t / "a" / "results.csv"), str(t / "b" / "results.csv"), "--out", str(t / "a")]


def c_decode_junk(s, t):
    (t / "codes.safetensors").write_bytes(b"junk")
    return ["decode", str(t / "codes.safetensors"), "--out", str(t / "v.nii.gz")]


def c_decode_wrong_keys(s, t):
    np.savez(t / "codes.npz", a=np.ones(3))
    return ["decode", str(t / "codes.npz"), "--out", str(t / "v.nii.gz")]


WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "cardiorecon" / "weights"


def c_lag_weights(kind):
    """lag given weights it cannot use: a truncated safetensors file, or another model kind's weights."""
    def build(s, t):
        w = t / "w"
        w.mkdir()
        if kind == "truncated":
            shutil.copyfile(WEIGHTS / "diffae_tiny" / "model.json", w / "model.json")
            (w / "model.safetensors").write_bytes((WEIGHTS / "diffae_tiny" / "model.safetensors").read_bytes()[:100000])
        else:
            for suffix in (".json", ".safetensors"):
                shutil.copyfile(WEIGHTS / kind / f"model{suffix}", w / f"model{suffix}")
        return ["reconstruct", str(s), "--method", "lag", "--frames", "ed", "--weights", str(w), "--out", str(t / "o")]

    return build


def c_selfsr_init(kind):
    """selfsr told to fine-tune weights that are not a selfsr network: another kind's, or none at all."""
    def build(s, t):
        w = t / "w"
        w.mkdir()
        if kind == "diffae":
            for suffix in (".json", ".safetensors"):
                shutil.copyfile(WEIGHTS / "diffae_tiny" / f"model{suffix}", w / f"model{suffix}")
        return ["reconstruct", str(s), "--method", "selfsr", "--frames", "ed", "--option", f"init={w}",
                "--option", "steps=5", "--out", str(t / "o")]

    return build


def c_out_file_for(command):
    def build(s, t):
        (t / "taken").write_text("keep me")
        if command == "phantom":
            return ["phantom", "--out", str(t / "taken"), "--subjects", "1", "--frames", "4"]
        if command == "evaluate":
            return ["evaluate", str(s), "--methods", "linear", "--no-segmentation", "--out", str(t / "taken")]
        if command == "report":
            from cardiorecon.report.evaluation import COLUMNS

            (t / "results.csv").write_text(",".join(COLUMNS) + "\n")
            return ["report", str(t / "results.csv"), "--out", str(t / "taken")]
        return ["segment", str(s), "--out", str(t / "taken")]

    return build


CASES = [
    ("missing path", c_missing, ["nowhere", "no such file"]),
    ("empty folder", c_empty_folder, ["empty", "not a recognised layout"]),
    ("unrelated folder", c_unrelated_folder, ["notes", "not a recognised layout"]),
    ("truncated NIfTI", c_truncated_nifti, ["sa.nii.gz", "not a readable NIfTI"]),
    ("not gzip", c_not_gzip, ["sa.nii.gz", "not a readable NIfTI"]),
    ("2D image", c_2d_image, ["sa.nii.gz", "expected a 3D or 4D image"]),
    ("5D image", c_5d_image, ["sa.nii.gz", "expected a 3D or 4D image"]),
    ("NaN voxel", c_nan, ["sa.nii.gz", "NaN or infinite"]),
    ("inf voxel", c_inf, ["sa.nii.gz", "NaN or infinite"]),
    ("all-zero SAX", c_all_zero, ["sa.nii.gz", "constant"]),
    ("blank frame asked of register", c_blank_frame("register"), ["subj", "frame 1", "blank"]),
    ("blank frame asked of lag", c_blank_frame("lag"), ["subj", "frame 1", "blank"]),
    ("singular affine", c_singular_affine, ["sa.nii.gz", "singular"]),
    ("qform pixdim[3] 0", c_qform_pixdim_zero, ["sa.nii.gz", "pixdim[3] = 0"]),
    ("LAX with several slices", c_lax_several_slices, ["la_2ch.nii.gz", "one slice"]),
    ("LAX parallel to SAX", c_lax_parallel_to_sax, ["la_4ch.nii.gz", "parallel to the SAX"]),
    ("subject.json not JSON", c_subject_json_invalid, ["subject.json", "invalid JSON"]),
    ("subject.json a list", c_subject_json_list, ["subject.json", "JSON object"]),
    ("subject.json ed_frame text", c_subject_json_ed_text, ["subject.json", "'ed_frame'", "'zero'"]),
    ("ACDC Info.cfg binary", c_acdc_binary_info, ["Info.cfg", "not a text file"]),
    ("DICOM truncated", c_dicom_truncated, ["s1_t1.dcm"]),
    ("DICOM without PixelSpacing", c_dicom_missing_pixel_spacing, ["s0_t0.dcm", "PixelSpacing"]),
    ("DICOM of another size", c_dicom_mixed_sizes, ["s2_t1.dcm", "7 x 5 pixels"]),
    ("DICOM two frames of reference", c_dicom_two_frames_of_reference, ["dcm", "frames of reference"]),
    ("DICOM two images of one phase", c_dicom_duplicate_phase, ["dcm", "same phase"]),
    ("DICOM phase missing", c_dicom_missing_phase, ["dcm", "SAX slice 1", "2 frames", "other slices 3"]),
    ("DICOM two patients", c_dicom_two_patients, ["dcm", "mixes 2 patients", "'PAT-A'", "'PAT-B'"]),
    ("header claiming 1000^3 voxels", c_header_claims_1000_cubed, ["sa.nii.gz", "refused before reading"]),
    ("report on a PNG", c_report_on_png, ["figure.png", "not a text file"]),
    ("--spacing with --factor", c_spacing_and_factor, ["--spacing 5", "--factor 2", "one of the two"]),
    ("align --out a file", c_align_out_for("file"), ["taken", "not a folder"]),
    ("align --out under /proc", c_align_out_for("proc"), ["/proc/cardiorecon_out", "system folder"]),
    ("align --out inside the input", c_align_out_for("inside"), ["aligned", "inside the input folder"]),
    ("cohort --out a file", c_cohort_out_for("file"), ["taken", "not a folder"]),
    ("cohort --out under /proc", c_cohort_out_for("proc"), ["/proc/cardiorecon_out", "system folder"]),
    ("cohort --out inside the input", c_cohort_out_for("inside"), ["results", "inside the input folder"]),
    ("cohort --frames=-1", c_cohort_frames("-1"), ["--frames", "negative"]),
    ("cohort --frames bogus", c_cohort_frames("ed;es"), ["--frames", "'ed;es'"]),
    ("--frames bogus", c_bad_frames_text, ["--frames", "'bogus'"]),
    ("--frames 9", c_frame_out_of_range, ["subject", "frame 9 outside 0..3"]),
    ("--frames 0,-7", c_frame_list_out_of_range, ["--frames", "frame -7", "negative"]),
    ("--frames=-1", c_frame_negative, ["--frames", "frame -1", "negative"]),
    ("--spacing 0", c_spacing_zero, ["--spacing", "positive"]),
    ("--out an existing file", c_out_existing_file, ["taken", "not a folder"]),
    ("--out the input folder", c_out_is_input_folder, ["subj", "is an input"]),
    ("phantom --out a file", c_out_file_for("phantom"), ["taken", "not a folder"]),
    ("evaluate --out a file", c_out_file_for("evaluate"), ["taken", "not a folder"]),
    ("report --out a file", c_out_file_for("report"), ["taken", "not a folder"]),
    ("segment --out a file", c_out_file_for("segment"), ["taken", "not a folder"]),
    ("--out read-only", c_out_read_only, ["ro", "permission denied"]),
    ("pickle as weights", c_weights_pickle, ["model.safetensors"]),
    ("weights with corrupt JSON", c_weights_corrupt_json, ["seg.json"]),
    ("CSV missing columns", c_csv_missing_columns, ["results.csv", "not a cardiorecon results.csv"]),
    ("CSV text in a number column", c_csv_text_in_number, ["results.csv", "must be a number"]),
    ("report --out holding its input", c_report_out_holds_input, ["would overwrite the input"]),
    ("decode a junk file", c_decode_junk, ["codes.safetensors", "not a codes file"]),
    ("lag weights truncated", c_lag_weights("truncated"), ["model.safetensors", "not a safetensors weights file"]),
    ("lag given a segmentation network", c_lag_weights("segnet_real"), ["model.json", "another kind of model"]),
    ("lag given DMCVR weights", c_lag_weights("dmcvr_labels_tiny"), ["model.json", "DMCVR weights"]),
    ("decode arrays of another program", c_decode_wrong_keys, ["codes.npz", "not a codes file"]),
    ("selfsr init from a DiffAE", c_selfsr_init("diffae"), ["model.json", "another kind of model"]),
    ("selfsr init from an empty folder", c_selfsr_init("none"), ["no model.safetensors"]),
]


# Labels are optional: a label map that does not fit is left out with a warning naming it (io/layouts.py),
# and the study is read without it.
HANDLED = [
    ("labels out of range", c_labels_out_of_range, ["label_sa.nii.gz", "label values must be 0..3"]),
    ("labels of another shape", c_labels_other_shape, ["label_sa.nii.gz", "shape"]),
]
# A 3D image is one frame of Z slices; where its header hints that the third axis is time, a warning names it.
WARNED = [
    ("3D cine with time units", c_3d_cine_with_time_units, ["cine.nii.gz", "time units (msec)", "(X, Y, 1, T)"]),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_error(subject, tmp_path, build, expected):
    if build is c_out_read_only and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    args = build(subject, tmp_path)
    before = _files(tmp_path) | _files(subject)
    result = RUNNER.invoke(app, args)
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 2, f"exit {result.exit_code}\n{output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    after = _files(tmp_path) | _files(subject)
    assert after == before, f"files written: {sorted(map(str, after - before))}"


@pytest.mark.parametrize("build,expected", [c[1:] for c in HANDLED], ids=[c[0] for c in HANDLED])
def test_unusable_labels_are_left_out_with_a_warning_naming_the_file(subject, tmp_path, build, expected):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = RUNNER.invoke(app, build(subject, tmp_path))
    assert result.exit_code == 0, result.output
    assert "labels: SAX no" in result.output
    messages = [str(w.message) for w in caught]
    assert any(all(t in m for t in expected) for m in messages), messages


@pytest.mark.parametrize("build,expected", [c[1:] for c in WARNED], ids=[c[0] for c in WARNED])
def test_doubtful_input_is_read_with_a_warning_naming_the_file(subject, tmp_path, build, expected):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = RUNNER.invoke(app, build(subject, tmp_path))
    assert result.exit_code == 0, result.output
    messages = [str(w.message) for w in caught]
    assert any(all(t in m for t in expected) for m in messages), messages


def test_warnings_are_one_line_naming_the_file_without_python_source(subject, tmp_path):
    """Issue 29: every UK Biobank command printed Python warnings with the source file and line
    ("layouts.py:98: GeometryWarning: ..." and the source line below it)."""
    import subprocess
    import sys

    f = _copy(subject, tmp_path)
    img = nib.load(str(f / "la_2ch.nii.gz"))
    _nifti(f / "la_2ch.nii.gz", np.asanyarray(img.dataobj), img.affine, sform_code=0, qform_code=0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PYTHONWARNINGS": ""}
    res = subprocess.run([sys.executable, "-m", "cardiorecon.cli", "info", str(f)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("warning: ") for ln in lines), res.stderr
    assert any("la_2ch.nii.gz" in ln and "sform and qform codes are both 0" in ln for ln in lines)
    assert ".py:" not in res.stderr and "warnings.warn" not in res.stderr


def test_first_run_defaults_are_the_fast_methods():
    """Issue 29: `reconstruct` defaulted to lag (minutes a frame on a CPU) and `evaluate` to a list with diffae
    and lag; the defaults are now the best-measured fast ones (docs/BENCHMARKS.md)."""
    import click
    import typer.main

    group = typer.main.get_command(app)
    ctx = click.Context(group)

    def default(command, name):
        cmd = group.get_command(ctx, command)
        return next(p.default for p in cmd.params if p.name == name)

    assert default("reconstruct", "method") == "register"
    assert default("evaluate", "methods") == "nearest,linear,cubic,register"
    for option in ("factor", "invert_steps", "decode_steps", "lag_iterations", "lag_steps"):
        cmd = group.get_command(ctx, "reconstruct")
        assert len(next(p.help for p in cmd.params if p.name == option) or "") > 40, option


def test_cohort_exit_code_says_whether_subjects_failed():
    """Issue 29: cohort exited 0 when every subject failed."""
    from types import SimpleNamespace

    from cardiorecon.cli.cohort import cohort_exit_code

    def run(*statuses):
        rows = [{"status": s} for s in statuses]
        return SimpleNamespace(rows=rows, done=statuses.count("done"), failed=statuses.count("failed"))

    assert cohort_exit_code(run("done", "done")) == 0
    assert cohort_exit_code(run("done", "skipped")) == 0  # a folder reached twice is used once
    assert cohort_exit_code(run("done", "failed")) == 1
    assert cohort_exit_code(run("failed", "failed")) == 3
    assert cohort_exit_code(run("skipped")) == 3
