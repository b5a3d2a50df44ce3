import nibabel as nib
import numpy as np
import pytest

from cardiorecon.errors import InputError
from cardiorecon.io import read_study
from conftest import oblique_affine


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def test_ukbb_layout(tmp_path):
    a = oblique_affine()
    _save(tmp_path / "sa.nii.gz", np.random.rand(8, 8, 4, 5).astype(np.float32), a)
    _save(tmp_path / "label_sa.nii.gz", np.random.randint(0, 4, (8, 8, 4, 5)).astype(np.uint8), a)
    _save(tmp_path / "la_4ch.nii.gz", np.random.rand(8, 8, 1, 5).astype(np.float32), oblique_affine(angles=(1.2, 0.1, 0)))
    study = read_study(tmp_path)
    assert study.sax.shape == (8, 8, 4, 5) and list(study.lax) == ["4ch"]
    assert study.sax_labels.data.dtype == np.uint8 and study.ed_frame == 0
    np.testing.assert_allclose(study.sax.affine, a, atol=1e-5)


def test_ukbb_ed_es_variant(tmp_path):
    a = np.diag([1.8, 1.8, 10, 1])
    for ph in ("ED", "ES"):
        _save(tmp_path / f"sa_{ph}.nii.gz", np.random.rand(6, 6, 3).astype(np.float32), a)
        _save(tmp_path / f"seg_sa_{ph}.nii.gz", np.ones((6, 6, 3), np.uint8), a)
    study = read_study(tmp_path)
    assert study.sax.shape == (6, 6, 3, 2) and (study.ed_frame, study.es_frame) == (0, 1)
    assert study.sax_labels.shape == (6, 6, 3, 2)


def test_mnms2_layout_finds_ed_es_in_cine(tmp_path):
    a = oblique_affine()
    cine = np.random.rand(6, 6, 3, 7).astype(np.float32)
    _save(tmp_path / "001_SA_CINE.nii.gz", cine, a)
    _save(tmp_path / "001_SA_ED.nii.gz", cine[..., 0], a)
    _save(tmp_path / "001_SA_ES.nii.gz", cine[..., 4], a)
    _save(tmp_path / "001_SA_ED_gt.nii.gz", np.full((6, 6, 3), 1, np.uint8), a)
    _save(tmp_path / "001_SA_ES_gt.nii.gz", np.full((6, 6, 3), 2, np.uint8), a)
    _save(tmp_path / "001_LA_ED.nii.gz", np.random.rand(6, 6, 1).astype(np.float32), oblique_affine(angles=(1.0, 0, 0)))
    study = read_study(tmp_path)
    assert (study.ed_frame, study.es_frame) == (0, 4)
    assert study.sax_labels.data[..., 4].max() == 2 and "4ch" in study.lax


def test_acdc_layout_remaps_labels(tmp_path):
    a = np.diag([1.5, 1.5, 10, 1])
    _save(tmp_path / "patient001_4d.nii.gz", np.random.rand(5, 5, 2, 10).astype(np.float32), a)
    gt = np.zeros((5, 5, 2), np.uint8)
    gt[0, 0, 0], gt[1, 1, 0], gt[2, 2, 0] = 1, 2, 3  # ACDC: 1 RV, 2 myo, 3 LV
    _save(tmp_path / "patient001_frame01_gt.nii.gz", gt, a)
    _save(tmp_path / "patient001_frame08_gt.nii.gz", gt, a)
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 8\nGroup: DCM\n")
    study = read_study(tmp_path)
    assert (study.ed_frame, study.es_frame) == (0, 7)
    lab = study.sax_labels.data
    assert (lab[0, 0, 0, 0], lab[1, 1, 0, 0], lab[2, 2, 0, 0]) == (3, 2, 1)
    assert study.meta["labelled_frames"] == [0, 7]


def test_2d_image_where_4d_stack_expected(tmp_path):
    _save(tmp_path / "sa.nii.gz", np.random.rand(8, 8).astype(np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"sa\.nii\.gz.*3D or 4D.*\(8, 8\)"):
        read_study(tmp_path)


def test_missing_files_and_unknown_layouts(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_study(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="not a recognised layout"):
        read_study(tmp_path)


def test_label_map_with_wrong_shape(tmp_path):
    _save(tmp_path / "sa.nii.gz", np.random.rand(8, 8, 4, 2).astype(np.float32), np.eye(4))
    _save(tmp_path / "label_sa.nii.gz", np.zeros((8, 7, 4, 2), np.uint8), np.eye(4))
    with pytest.warns(UserWarning, match=r"label_sa\.nii\.gz.*does not match.*without these labels"):
        study = read_study(tmp_path)
    assert study.sax_labels is None and "does not match" in study.meta["label_problems"][0]


def _write_dicom(path, rows, cols, ipp, iop, series_uid, trigger=0.0, value=None):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8
    ds.ImagePositionPatient = list(ipp)
    ds.ImageOrientationPatient = list(iop)
    ds.TriggerTime = trigger
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    arr = np.full((rows, cols), 100 if value is None else value, np.uint16)
    ds.PixelData = arr.tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


def test_dicom_folder_geometry_lps_to_ras(tmp_path):
    iop = [1, 0, 0, 0, 1, 0]
    for k in range(3):
        for t in range(2):
            _write_dicom(tmp_path / f"s{k}_{t}.dcm", 4, 6, [10.0, 20.0, 30.0 + 10 * k], iop, "1.2.3", trigger=50.0 * t,
                         value=k * 10 + t)
    study = read_study(tmp_path)
    assert study.sax.shape == (6, 4, 3, 2)  # (columns, rows, slices, frames)
    # LPS (10, 20, 30) -> RAS (-10, -20, 30); i along the row cosine (+x LPS = -x RAS)
    np.testing.assert_allclose(study.sax.affine, [[-1.5, 0, 0, -10], [0, -1.5, 0, -20], [0, 0, 10, 30], [0, 0, 0, 1]])
    assert study.sax.data[0, 0, 2, 1] == 21  # slice by position, frame by trigger time


def test_dicom_folder_with_mixed_sizes(tmp_path):
    iop = [1, 0, 0, 0, 1, 0]
    _write_dicom(tmp_path / "a.dcm", 4, 6, [0, 0, 0], iop, "1.2.3")
    _write_dicom(tmp_path / "b.dcm", 5, 6, [0, 0, 10], iop, "1.2.3")
    with pytest.raises(InputError, match=r"mixed image sizes"):
        read_study(tmp_path)
