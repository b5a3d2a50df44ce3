"""DICOM folder reader: geometry with non-square pixels and an oblique orientation against the
DICOM standard's pixel-to-patient formula, duplicates, frames of reference, pydicom's config."""

import warnings

import numpy as np
import pydicom
import pytest

from cardiorecon.errors import GeometryWarning, InputError
from cardiorecon.io.dicom import read_dicom_folder

# An oblique orthonormal orientation: row direction r, column direction c (LPS).
R = np.array([0.8, 0.6, 0.0])
C = np.array([-0.36, 0.48, 0.8])
N = np.cross(R, C)
SPACING = (1.3, 1.9)  # PixelSpacing: (between rows, between columns) mm
ROWS, COLS = 5, 4
FOR = "1.2.826.0.1.3680043.8.498.9"


def _write(path, ipp, trigger, instance, value_offset, series="1.2.826.0.1.3680043.8.498.1", iop=None,
           for_uid=FOR, description="", sop=None, patient=None, study=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop = sop or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, sop, "MR"
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SeriesDescription = series, for_uid, description
    if patient is not None:
        ds.PatientID = patient
    if study is not None:
        ds.StudyInstanceUID = study
    ds.Rows, ds.Columns = ROWS, COLS
    ds.PixelSpacing = list(SPACING)
    ds.SliceThickness = 8
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in (np.concatenate([R, C]) if iop is None else iop)]
    ds.TriggerTime, ds.InstanceNumber = trigger, instance
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(ROWS * COLS).reshape(ROWS, COLS) + value_offset).astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


ORIGIN = np.array([-20.0, 35.0, 60.0])


def _cine(folder, slices=3, frames=2):
    # file names in an order that is neither the slice order nor the frame order
    for k in (2, 0, 1)[:slices] if slices == 3 else range(slices):
        for t in range(frames):
            _write(folder / f"img_{(7 * k + 3 * t) % 11:02d}_{k}{t}.dcm", ORIGIN + 10.0 * k * N, 45.0 * t,
                   1 + t + frames * k, 100 * k + 1000 * t)
    return folder


def test_oblique_non_square_geometry_matches_the_dicom_formula(tmp_path):
    study = read_dicom_folder(_cine(tmp_path))
    sax = study.sax
    assert sax.shape == (COLS, ROWS, 3, 2)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    for k in range(3):
        for row, col in ((0, 0), (2, 3), (4, 1)):
            # DICOM PS3.3 C.7.6.2.1.1: P = S + Delta_i * X * col + Delta_j * Y * row, with (Delta_j, Delta_i) = PixelSpacing
            lps = ORIGIN + 10.0 * k * N + R * SPACING[1] * col + C * SPACING[0] * row
            world = sax.affine @ np.array([col, row, k, 1.0])
            np.testing.assert_allclose(world[:3], lps_to_ras @ lps, atol=1e-6)
            for t in range(2):
                assert sax.data[col, row, k, t] == row * COLS + col + 100 * k + 1000 * t
    np.testing.assert_allclose(sax.spacing, [SPACING[1], SPACING[0], 10.0], atol=1e-9)


def test_pydicom_config_is_left_alone(tmp_path):
    before = pydicom.config.settings.reading_validation_mode
    read_dicom_folder(_cine(tmp_path))
    assert pydicom.config.settings.reading_validation_mode == before


def test_an_exact_copy_is_used_once_and_named(tmp_path):
    _cine(tmp_path)
    clean = read_dicom_folder(tmp_path).sax.data.copy()
    original = sorted(tmp_path.glob("*_10.dcm"))[0]
    (tmp_path / "copy_of_it.dcm").write_bytes(original.read_bytes())
    with pytest.warns(UserWarning, match=r"same image .* as .*copy_of_it\.dcm|copy_of_it\.dcm: the same image"):
        study = read_dicom_folder(tmp_path)
    np.testing.assert_array_equal(study.sax.data, clean)


def test_a_missing_phase_is_an_error_naming_the_slice_not_a_shifted_cine(tmp_path):
    _cine(tmp_path, frames=3)
    victim = [p for p in tmp_path.iterdir() if p.name.endswith("_11.dcm")][0]
    victim.unlink()
    with pytest.raises(InputError, match=r"SAX slice 1 .* has 2 frames, the other slices 3"):
        read_dicom_folder(tmp_path)


def test_an_unreadable_file_is_named(tmp_path):
    _cine(tmp_path)
    bad = [p for p in tmp_path.iterdir() if p.name.endswith("_01.dcm")][0]
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(InputError, match=bad.name):
        read_dicom_folder(tmp_path)


def test_a_lax_series_in_another_frame_of_reference_does_not_guide(tmp_path):
    _cine(tmp_path)
    lax_iop = np.concatenate([R, N])  # a plane containing the SAX normal
    for t in range(2):
        _write(tmp_path / f"lax_same_{t}.dcm", ORIGIN, 45.0 * t, 50 + t, 0, series="1.2.826.0.1.3680043.8.498.2",
               iop=lax_iop, description="4CH")
        _write(tmp_path / f"lax_other_{t}.dcm", ORIGIN + 3 * R, 45.0 * t, 60 + t, 0,
               series="1.2.826.0.1.3680043.8.498.3", iop=np.concatenate([C, N]), description="2CH",
               for_uid="1.2.826.0.1.3680043.8.498.99")
    with pytest.warns(GeometryWarning, match=r"lax_other_0\.dcm.*FrameOfReferenceUID.*not used"):
        study = read_dicom_folder(tmp_path)
    assert sorted(study.lax) == ["4ch"]


def test_anonymised_frames_of_reference_are_not_compared(tmp_path):
    # Sunnybrook gives every image its own FrameOfReferenceUID: nothing can be compared; the read goes on
    for k in range(3):
        for t in range(2):
            _write(tmp_path / f"s{k}{t}.dcm", ORIGIN + 10.0 * k * N, 45.0 * t, 1 + t + 2 * k, 0,
                   for_uid=f"1.2.826.0.1.3680043.8.498.{100 + 2 * k + t}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = read_dicom_folder(tmp_path)
    assert study.sax.shape == (COLS, ROWS, 3, 2)
    assert any("FrameOfReferenceUID differs" in str(w.message) for w in caught)


@pytest.mark.parametrize("key", ["patient", "study"])
def test_a_folder_mixing_two_patients_or_studies_is_refused_naming_both(tmp_path, key):
    """Issue 29: another patient's SAX series in the folder was taken for LAX views that guided this one."""
    for k in range(3):
        for t in range(2):
            _write(tmp_path / f"a_{k}{t}.dcm", ORIGIN + 10.0 * k * N, 45.0 * t, 1 + t + 2 * k, 100 * k,
                   patient="PAT-A", study="1.2.3.1")
    # the other patient's short-axis series, in another orientation (it would have become a "LAX view")
    other = {"patient": "PAT-B"} if key == "patient" else {"study": "1.2.3.2"}
    for k in range(2):
        _write(tmp_path / f"b_{k}.dcm", ORIGIN + 10.0 * k * R, 0.0, 1, 5, series="1.2.3.9",
               iop=np.concatenate([C, N]), **{"patient": "PAT-A", "study": "1.2.3.1", **other})
    with pytest.raises(InputError) as err:
        read_dicom_folder(tmp_path)
    msg = str(err.value)
    want = ("'PAT-A'", "'PAT-B'") if key == "patient" else ("'1.2.3.1'", "'1.2.3.2'")
    assert str(tmp_path) in msg and all(w in msg for w in want), msg
    assert "b_0.dcm" in msg or "b_1.dcm" in msg


def test_an_anonymised_empty_patient_id_does_not_count_as_another_patient(tmp_path):
    for k in range(3):
        for t in range(2):
            _write(tmp_path / f"a_{k}{t}.dcm", ORIGIN + 10.0 * k * N, 45.0 * t, 1 + t + 2 * k, 100 * k,
                   patient="" if k == 0 else "PAT-A", study="1.2.3.1")
    assert read_dicom_folder(tmp_path).sax.shape[2:] == (3, 2)
