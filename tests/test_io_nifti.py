import nibabel as nib
import numpy as np
import pytest

from cardiorecon.errors import InputError, OutputError
from cardiorecon.io import read_nifti, write_nifti
from cardiorecon.volume import Volume
from conftest import oblique_affine

AFFINES = {
    "oblique": oblique_affine(),
    "anisotropic": np.diag([0.7, 1.9, 8.0, 1.0]),
    "lps": oblique_affine(lps=True),
}


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4), (6, 5, 4, 3)])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_round_trip_against_nibabel(tmp_path, shape, name):
    affine = AFFINES[name]
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    # nibabel writes, we read
    src = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(src))
    vol = read_nifti(src)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(vol.data.reshape(shape), data)
    assert vol.data.ndim == (3 if len(shape) == 2 else len(shape))
    # we write, nibabel reads: sform and qform both carry the affine
    out = write_nifti(vol, tmp_path / "ours.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).reshape(shape), data)


def test_qform_only_file_is_read(tmp_path):
    affine = oblique_affine()
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None)
    img.set_qform(affine, code=1)
    img.set_sform(np.eye(4), code=0)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    np.testing.assert_allclose(read_nifti(tmp_path / "q.nii.gz").affine, affine, atol=1e-4)


def test_writer_never_overwrites_an_input(tmp_path):
    path = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)), str(path))
    before = path.read_bytes()
    vol = read_nifti(path)
    with pytest.raises(OutputError, match="overwrite an input"):
        write_nifti(vol.with_data(vol.data * 2), path)
    assert path.read_bytes() == before


def test_failed_write_leaves_existing_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"previous result")
    vol = Volume(np.ones((2, 2, 2), np.float32), np.eye(4))

    def broken_save(img, filename):
        open(filename, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        write_nifti(vol, out)
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_singular_affine_and_nan_are_refused(tmp_path):
    bad = np.eye(4)
    bad[2, 2] = 0
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None)
    img.set_sform(bad, code=1)
    nib.save(img, str(tmp_path / "singular.nii.gz"))
    with pytest.raises(InputError, match=r"singular\.nii\.gz.*singular"):
        read_nifti(tmp_path / "singular.nii.gz")
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(InputError, match=r"nan\.nii\.gz.*NaN"):
        read_nifti(tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="file not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match=r"corrupt\.nii\.gz.*not a readable NIfTI"):
        read_nifti(tmp_path / "corrupt.nii.gz")


def test_codes_zero_warn_naming_the_file_and_lax_views_then_do_not_guide(tmp_path):
    import shutil

    from cardiorecon.errors import GeometryWarning
    from cardiorecon.io import read_study
    from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject

    folder = write_subject(generate(sample_params(2, "healthy", num_frames=4), AcquisitionConfig(sax_matrix=32,
                                                                                                 lax_matrix=24),
                                    truth=False), tmp_path / "s")

    def strip_codes(path):
        img = nib.load(str(path))
        out = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
        out.set_sform(None, code=0)
        out.set_qform(None, code=0)
        nib.save(out, str(path))

    strip_codes(folder / "la_2ch.nii.gz")
    with pytest.warns(GeometryWarning, match=r"la_2ch\.nii\.gz: sform and qform codes are both 0"):
        vol = read_nifti(folder / "la_2ch.nii.gz")
    assert vol.meta["geometry"] == "none"
    with pytest.warns(GeometryWarning, match=r"la_2ch\.nii\.gz: LAX view '2ch' not used"):
        study = read_study(folder)
    assert sorted(study.lax) == ["3ch", "4ch"] and "2ch" not in study.lax_labels
    # a SAX stack without position: no LAX view can be placed against it
    other = shutil.copytree(folder, tmp_path / "t")
    strip_codes(other / "sa.nii.gz")
    with pytest.warns(GeometryWarning, match=r"sa\.nii\.gz has no sform/qform code"):
        study = read_study(other)
    assert study.lax == {}


def test_qform_only_with_a_zero_slice_size_is_refused(tmp_path):
    import struct

    img = nib.Nifti1Image(np.ones((3, 3, 4), np.float32), None)
    img.set_sform(None, code=0)
    img.set_qform(np.diag([1.8, 1.8, 10.0, 1.0]), code=1)
    nib.save(img, str(tmp_path / "q.nii"))
    raw = bytearray((tmp_path / "q.nii").read_bytes())
    raw[88:92] = struct.pack("<f", 0.0)  # pixdim[3]: nibabel would read 1 mm slices instead of 10
    (tmp_path / "q.nii").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"q\.nii: the qform .* pixdim\[3\] = 0: the slice spacing is unknown"):
        read_nifti(tmp_path / "q.nii")


def test_volume_refuses_nan_and_a_study_a_constant_sax():
    from cardiorecon.volume import Study

    data = np.ones((4, 4, 3, 2), np.float32)
    data[0, 0, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"x\.nii: 1 voxel\(s\) are NaN or infinite"):
        Volume(data, np.eye(4), {"source": "x.nii"})
    with pytest.raises(InputError, match="constant"):
        Study(Volume(np.zeros((4, 4, 3, 2), np.float32), np.eye(4), {"source": "x.nii"}))
    with pytest.raises(InputError, match="ED frame must be a frame index"):
        Study(Volume(np.random.default_rng(0).random((4, 4, 3, 2)), np.eye(4)), ed_frame="zero")


def test_a_3d_volume_we_write_reads_back_as_a_study_without_warnings(tmp_path):
    import warnings

    from cardiorecon.errors import GeometryWarning
    from cardiorecon.io import read_study

    rng = np.random.default_rng(0)
    write_nifti(Volume(rng.random((8, 8, 12)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "v.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        assert read_study(tmp_path / "v.nii.gz").sax.shape == (8, 8, 12, 1)


def _header_only(path, shape, dtype=np.float32, tail=1000):
    """A NIfTI whose header claims `shape` but which holds only `tail` bytes of data."""
    import gzip
    import io

    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(dtype)
    h.set_sform(np.diag([1.8, 1.8, 10.0, 1.0]), code=1)
    h["vox_offset"] = 352
    buf = io.BytesIO()
    h.write_to(buf)
    buf.write(b"\0" * (352 - buf.tell() + tail))
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("name,shape,text", [
    ("huge.nii.gz", (1000, 1000, 1000), "refused before reading"),
    ("huge.nii", (1000, 1000, 1000), "refused before reading"),
    ("big.nii.gz", (400, 400, 200, 1), "compressed file holds"),
    ("big.nii", (400, 400, 200, 1), "truncated"),
])
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path, name, shape, text):
    """Issue 29: a header claiming 1000^3 voxels was refused only after 7.9 GB of memory and 21 s."""
    import time
    import tracemalloc

    path = _header_only(tmp_path / name, shape)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=text) as err:
        read_nifti(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert name in str(err.value) and str(shape) in str(err.value)
    assert peak < 50e6 and time.perf_counter() - t0 < 5.0, (peak, time.perf_counter() - t0)


def _strip_codes(path, keep=None):
    img = nib.load(str(path))
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    out.set_sform(None, code=0)
    out.set_qform(None, code=0)
    nib.save(out, str(path))


@pytest.mark.parametrize("layout", ["ukbb", "mnms2"])
def test_ed_es_extracts_without_codes_leave_the_lax_views_out(tmp_path, layout):
    """Issue 29: SAX ED/ES extracts (UK Biobank sa_ED/sa_ES, M&Ms-2 SA_ED/SA_ES) with sform and qform codes 0
    lost their mark when stacked, so LAX views guided (and alignment moved the SAX) from a guessed place."""
    from cardiorecon.errors import GeometryWarning
    from cardiorecon.io import read_study
    from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject

    src = write_subject(generate(sample_params(2, "healthy", num_frames=4), AcquisitionConfig(sax_matrix=32,
                                                                                              lax_matrix=24),
                                 truth=False), tmp_path / "src")
    sa, la = nib.load(str(src / "sa.nii.gz")), nib.load(str(src / "la_4ch.nii.gz"))
    folder = tmp_path / "subj"
    folder.mkdir()
    sax_names = ("sa_ED", "sa_ES") if layout == "ukbb" else ("001_SA_ED", "001_SA_ES")
    lax_names = ("la_4ch_ED", "la_4ch_ES") if layout == "ukbb" else ("001_LA_ED", "001_LA_ES")
    for t, (sn, ln) in enumerate(zip(sax_names, lax_names)):
        nib.save(nib.Nifti1Image(np.asanyarray(sa.dataobj)[..., t], sa.affine), str(folder / f"{sn}.nii.gz"))
        nib.save(nib.Nifti1Image(np.asanyarray(la.dataobj)[..., t], la.affine), str(folder / f"{ln}.nii.gz"))
        _strip_codes(folder / f"{sn}.nii.gz")
    with pytest.warns(GeometryWarning, match=r"has no sform/qform code"):
        study = read_study(folder)
    assert study.lax == {}
    assert study.sax.meta["geometry"] == "none"
