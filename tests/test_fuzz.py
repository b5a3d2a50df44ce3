"""Property-based fuzzing (hypothesis) of the NIfTI and DICOM readers and of the frame/factor parsing:
whatever the input, the result is a valid Volume/Study/selection or one of the clean errors
(InputError and its subclasses), never another exception.

A short run in the default test run; the same properties with many more examples under
`make test-slow` (pytest -m slow)."""

from __future__ import annotations

import functools
import io
import os
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardiorecon.errors import InputError
from cardiorecon.io import read_nifti
from cardiorecon.io.dicom import read_dicom_folder
from cardiorecon.recon.pipeline import resolve_factor
from cardiorecon.volume import Study, Volume, parse_frames

SHORT = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                 database=None)
# the long run's size: CARDIORECON_FUZZ_EXAMPLES (default 1500 examples per property)
LONG = settings(max_examples=int(os.environ.get("CARDIORECON_FUZZ_EXAMPLES", "1500")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)


def both(*strategies):
    """Two tests from one property: a short run (default) and a long one (slow)."""
    def wrap(prop):
        def make(config):
            @functools.wraps(prop)
            def test(*args, **kwargs):
                return prop(*args, **kwargs)

            return config(given(*strategies)(test))

        return make(SHORT), pytest.mark.slow(make(LONG))

    return wrap


def _valid_nifti_bytes(shape=(4, 3, 2), gz=False) -> bytes:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    img = nib.Nifti1Image(data, np.diag([1.5, 1.7, 8.0, 1.0]))
    bio = io.BytesIO()
    file_map = img.make_file_map({"image": bio, "header": bio})
    img.to_file_map(file_map)
    raw = bio.getvalue()
    if gz:
        import gzip

        raw = gzip.compress(raw)
    return raw


NIFTI = _valid_nifti_bytes()


def _check_volume(vol: Volume) -> None:
    assert vol.data.ndim in (3, 4) and min(vol.data.shape) > 0
    assert np.all(np.isfinite(vol.affine)) and abs(np.linalg.det(vol.affine[:3, :3])) > 0
    if vol.data.dtype.kind == "f":
        assert np.isfinite(vol.data).all()


def _read_or_clean_error(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _check_volume(read_nifti(path))
        except InputError as exc:
            assert str(path) in str(exc)


@st.composite
def byte_edits(draw, size):
    n = draw(st.integers(1, 8))
    return [(draw(st.integers(0, size - 1)), draw(st.integers(0, 255))) for _ in range(n)]


def prop_nifti_header_bytes(edits):
    raw = bytearray(NIFTI)
    for pos, value in edits:
        raw[pos % 352] = value  # the header and extension flag: where corruption matters
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nii"
        path.write_bytes(bytes(raw))
        _read_or_clean_error(path)


test_nifti_header_bytes, test_nifti_header_bytes_long = both(byte_edits(352))(prop_nifti_header_bytes)


def prop_nifti_truncated_or_gz_corrupt(cut, edits):
    raw = bytearray(_valid_nifti_bytes(gz=True))
    for pos, value in edits:
        raw[pos % len(raw)] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nii.gz"
        path.write_bytes(bytes(raw[: max(0, len(raw) - cut)]))
        _read_or_clean_error(path)


test_nifti_gz, test_nifti_gz_long = both(st.integers(0, 400), byte_edits(400))(prop_nifti_truncated_or_gz_corrupt)

finite = st.floats(-1e4, 1e4, allow_nan=False)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)


def prop_nifti_header_fields(shape, pixdim, sform, scode, qcode, dtype, values):
    data = np.resize(np.asarray(values, dtype=np.float64), shape).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = nib.Nifti1Image(data, None)
        try:
            img.set_sform(np.vstack([np.asarray(sform).reshape(3, 4), [0, 0, 0, 1]]), code=scode)
            img.header.set_qform(np.diag(list(pixdim[:3]) + [1.0]) if all(p != 0 for p in pixdim[:3]) else None,
                                 code=qcode)
        except Exception:  # noqa: BLE001 - nibabel refuses to write this header: nothing to read
            return
        img.header["pixdim"][1:1 + len(pixdim)] = pixdim
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nii.gz"
        try:
            nib.save(img, str(path))
        except Exception:  # noqa: BLE001
            return
        _read_or_clean_error(path)


test_nifti_fields, test_nifti_fields_long = both(
    st.lists(st.integers(1, 4), min_size=1, max_size=5).map(tuple),
    st.lists(st.sampled_from([0.0, -1.0, 1.0, 2.5, 10.0, float("nan"), float("inf")]), min_size=3, max_size=4),
    st.lists(st.one_of(finite, st.sampled_from([0.0, float("nan")])), min_size=12, max_size=12),
    st.integers(0, 4), st.integers(0, 4),
    st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.int32]),
    st.lists(any_float, min_size=1, max_size=6),
)(prop_nifti_header_fields)


# ----------------------------------------------------------------------------------- DICOM

def _dicom_dataset(k: int, t: int, iop, spacing, rows=5, cols=4):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop = f"1.2.826.0.1.3680043.8.498.{1000 + 10 * k + t}"  # fixed: reproducible bytes
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, sop, "MR"
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.4", "1.2.3.9"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 8
    ds.ImagePositionPatient = [1.0 * k, 2.0 * k, 10.0 * k]
    ds.ImageOrientationPatient = list(iop)
    ds.TriggerTime, ds.InstanceNumber = 30.0 * t, 1 + t + 10 * k
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(rows * cols) + 7 * k + t).astype(np.uint16).tobytes()
    return ds


def _dicom_folder(tmp: Path) -> list[Path]:
    import pydicom

    iop = [0.8, 0.6, 0.0, -0.36, 0.48, 0.8]  # oblique, orthonormal
    paths = []
    for k in range(3):
        for t in range(2):
            path = tmp / f"k{k}_t{t}.dcm"
            pydicom.dcmwrite(str(path), _dicom_dataset(k, t, iop, (1.3, 1.9)), enforce_file_format=True)
            paths.append(path)
    return paths


def _read_study_or_clean_error(folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            study = read_dicom_folder(folder)
        except InputError:
            return
    assert isinstance(study, Study)
    _check_volume(study.sax)


def prop_dicom_bytes(which, edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        paths = _dicom_folder(Path(tmp))
        path = paths[which % len(paths)]
        raw = bytearray(path.read_bytes())
        for pos, value in edits:
            raw[pos % len(raw)] = value
        path.write_bytes(bytes(raw[: max(0, len(raw) - cut)]))
        _read_study_or_clean_error(Path(tmp))


test_dicom_bytes, test_dicom_bytes_long = both(st.integers(0, 5), byte_edits(600), st.integers(0, 300))(
    prop_dicom_bytes)


def prop_dicom_fields(which, field, value):
    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        paths = _dicom_folder(Path(tmp))
        path = paths[which % len(paths)]
        ds = pydicom.dcmread(str(path))
        try:
            if value is None:
                delattr(ds, field)
            else:
                setattr(ds, field, value)
            pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - pydicom refuses to write this value: nothing to read
            return
        _read_study_or_clean_error(Path(tmp))


number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
test_dicom_fields, test_dicom_fields_long = both(
    st.integers(0, 5),
    st.sampled_from(["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns",
                     "TriggerTime", "InstanceNumber", "SliceThickness", "RescaleSlope", "FrameOfReferenceUID",
                     "SeriesInstanceUID", "SOPInstanceUID"]),
    st.one_of(st.none(), number, st.lists(number, min_size=0, max_size=7), st.text(max_size=12)),
)(prop_dicom_fields)


# ----------------------------------------------------------------------------------- frames and factor

def _study(num_frames=5, ed=0, es=2) -> Study:
    rng = np.random.default_rng(0)
    sax = Volume(rng.random((4, 4, 3, num_frames)).astype(np.float32), np.diag([2.0, 2.0, 10.0, 1.0]),
                 {"source": "study.nii.gz"})
    return Study(sax, ed_frame=ed, es_frame=es, meta={"source": "study.nii.gz"})


STUDY = _study()


def prop_frames(text):
    try:
        frames = STUDY.resolve_frames(text)
    except InputError:
        return
    assert frames and all(isinstance(t, int) and 0 <= t < STUDY.num_frames for t in frames)
    parsed = parse_frames(text)
    if isinstance(parsed, int):
        assert frames == [parsed % STUDY.num_frames]


frame_text = st.one_of(
    st.text(max_size=12),
    st.integers(-20, 20).map(str),
    st.lists(st.integers(-9, 9), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.sampled_from(["ed", "ES", " all ", "ed-es", "1.5", "0x1", "٣", "1e3", "+2", "--1", ","]),
)
test_frames, test_frames_long = both(frame_text)(prop_frames)


def prop_factor(factor, spacing):
    if (factor is None) == (spacing is None):
        return
    try:
        f = resolve_factor(STUDY, factor, spacing)
    except InputError:
        return
    assert isinstance(f, int) and 1 <= f and (STUDY.sax.spatial_shape[2] - 1) * f + 1 <= 2048


test_factor, test_factor_long = both(
    st.one_of(st.none(), st.integers(-3, 10 ** 6)),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)(prop_factor)
