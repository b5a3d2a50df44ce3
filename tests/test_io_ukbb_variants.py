"""Issue 12 reader cases: UK Biobank ED/ES variants, labels that do not fit, LAX phase pairing,
impossible LAX thickness, study discovery (series subfolders, unrecognised folders)."""

import nibabel as nib
import numpy as np
import pytest

from cardiorecon.io import read_study
from cardiorecon.io.discover import discover_studies
from cardiorecon.phase import lax_frame_index
from cardiorecon.phase import lax_frame, pair_lax_frames


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


SAX_A = np.diag([1.8, 1.8, 10.0, 1.0])


def _lax_affine():
    # a plane at right angles to the SAX (normal along x), crossing the stack
    a = np.zeros((4, 4))
    a[:3, 0] = [0, 1.8, 0]
    a[:3, 1] = [0, 0, 1.8]
    a[:3, 2] = [6.0, 0, 0]
    a[:3, 3] = [10.0, 0.0, -10.0]
    a[3, 3] = 1
    return a


def _beating(shape_xy=(24, 24), slices=4, frames=50, es=17, seed=0):
    """A cine whose bright disc shrinks from frame 0 (ED) to `es` and grows back."""
    X, Y = shape_xy
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    phase = np.concatenate([np.linspace(0, 1, es + 1), np.linspace(1, 0, frames - es + 1)[1:-1]])
    out = np.zeros((X, Y, slices, frames), np.float32)
    for t in range(frames):
        r = 9 - 5 * phase[t]
        out[..., t] = ((ii - X / 2) ** 2 + (jj - Y / 2) ** 2 <= r * r)[..., None] * 100.0
    return out + np.random.default_rng(seed).normal(0, 1, out.shape).astype(np.float32)


def test_ukbb_ed_es_extracts_with_cine_labels_loads_without_labels(tmp_path):
    """sa_ED/sa_ES beside a 50-frame seg_sa (no sa cine): the study loads, the labels are left out
    with a warning naming the file."""
    cine = _beating(frames=50)
    _save(tmp_path / "sa_ED.nii.gz", cine[..., 0], SAX_A)
    _save(tmp_path / "sa_ES.nii.gz", cine[..., 17], SAX_A)
    _save(tmp_path / "seg_sa.nii.gz", (cine > 50).astype(np.uint8), SAX_A)
    with pytest.warns(UserWarning, match=r"seg_sa\.nii\.gz.*50 frames.*image has 2"):
        study = read_study(tmp_path)
    assert study.sax.num_frames == 2 and (study.ed_frame, study.es_frame) == (0, 1)
    assert study.sax_labels is None


def test_ukbb_ed_es_extracts_with_ed_es_labels(tmp_path):
    cine = _beating(frames=50)
    for ph, t in (("ED", 0), ("ES", 17)):
        _save(tmp_path / f"sa_{ph}.nii.gz", cine[..., t], SAX_A)
        _save(tmp_path / f"seg_sa_{ph}.nii.gz", (cine[..., t] > 50).astype(np.uint8), SAX_A)
    study = read_study(tmp_path)
    assert study.sax_labels.num_frames == 2 and study.meta["labelled_frames"] == [0, 1]
    assert study.sax_labels.data[..., 1].sum() < study.sax_labels.data[..., 0].sum()  # ES is the small one


def test_ukbb_cine_with_ed_es_labels_locates_es_from_extract(tmp_path):
    """sa.nii.gz cine + seg_sa_ED/ES + sa_ES: ES is located in the cine from sa_ES, never put on frame 1."""
    cine = _beating(frames=30, es=11)
    _save(tmp_path / "sa.nii.gz", cine, SAX_A)
    _save(tmp_path / "sa_ES.nii.gz", cine[..., 11], SAX_A)
    for ph, t in (("ED", 0), ("ES", 11)):
        _save(tmp_path / f"seg_sa_{ph}.nii.gz", (cine[..., t] > 50).astype(np.uint8), SAX_A)
    study = read_study(tmp_path)
    assert (study.ed_frame, study.es_frame) == (0, 11)
    assert study.sax_labels.data[..., 11].any() and not study.sax_labels.data[..., 1].any()


def test_ukbb_cine_with_ed_es_labels_but_unknown_es(tmp_path):
    cine = _beating(frames=30, es=11)
    _save(tmp_path / "sa.nii.gz", cine, SAX_A)
    for ph, t in (("ED", 0), ("ES", 11)):
        _save(tmp_path / f"seg_sa_{ph}.nii.gz", (cine[..., t] > 50).astype(np.uint8), SAX_A)
    with pytest.warns(UserWarning, match=r"seg_sa_ES\.nii\.gz.*ES frame is unknown"):
        study = read_study(tmp_path)
    assert study.es_frame is None and study.sax_labels is None


def test_ed_es_sax_pairs_es_with_the_lax_frame_of_the_same_phase(tmp_path):
    """ED/ES-only SAX with a 50-frame LAX cine: ES pairs with the LAX frame that looks like ES
    (17 here), not with frame 25 (half the frame count)."""
    cine = _beating(frames=50, es=17)
    _save(tmp_path / "sa_ED.nii.gz", cine[..., 0], SAX_A)
    _save(tmp_path / "sa_ES.nii.gz", cine[..., 17], SAX_A)
    # The LAX plane x = 10 mm ... sample the same beating disc on it
    lax_a = _lax_affine()
    X, Y, Z = 24, 24, 4
    jj, kk = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    world = np.stack([np.full_like(jj, 10.0, dtype=float), jj * 1.8, kk * 1.8 - 10], -1)
    vox = world / np.array([1.8, 1.8, 10.0])
    lax = np.zeros((24, 24, 1, 50), np.float32)
    from scipy import ndimage

    for t in range(50):
        lax[:, :, 0, t] = ndimage.map_coordinates(cine[..., t], vox.reshape(-1, 3).T, order=1, mode="nearest").reshape(24, 24)
    _save(tmp_path / "la_4ch.nii.gz", lax, lax_a)
    study = read_study(tmp_path)
    pair_lax_frames(study)  # the plan's first step (plan.make_plan)
    view = study.lax["4ch"]
    assert abs(lax_frame_index(view, 1, 2) - 17) <= 1
    assert lax_frame_index(view, 0, 2) in (0, 1, 49)
    np.testing.assert_array_equal(lax_frame(view, 1, 2), view.data[:, :, 0, lax_frame_index(view, 1, 2)])


def test_lax_ed_es_files_pair_with_sax_ed_es(tmp_path):
    cine = _beating(frames=2, es=1)
    _save(tmp_path / "sa_ED.nii.gz", cine[..., 0], SAX_A)
    _save(tmp_path / "sa_ES.nii.gz", cine[..., 1], SAX_A)
    for i, ph in enumerate(("ED", "ES")):
        _save(tmp_path / f"la_2ch_{ph}.nii.gz", np.full((24, 24, 1), i + 1.0, np.float32), _lax_affine())
    study = read_study(tmp_path)
    view = study.lax["2ch"]
    assert view.num_frames == 2 and view.meta["sax_frame_pairing"] == [0, 1]
    assert "ED/ES files" in view.meta["sax_frame_pairing_rule"]


def test_impossible_lax_thickness_replaced_with_warning_and_override(tmp_path):
    cine = _beating(frames=5, es=2)
    _save(tmp_path / "sa.nii.gz", cine, SAX_A)
    a = _lax_affine()
    a[:3, 2] = [1.0, 0, 0]  # header says 1 mm (M&Ms-2 LA)
    _save(tmp_path / "la_4ch.nii.gz", np.ones((24, 24, 1, 5), np.float32), a)
    with pytest.warns(UserWarning, match=r"la_4ch\.nii\.gz.*1 mm.*using 6 mm"):
        study = read_study(tmp_path)
    assert study.lax["4ch"].slice_thickness == 6.0
    assert read_study(tmp_path, lax_thickness_mm=8.0).lax["4ch"].slice_thickness == 8.0


def test_trigger_time_pairing(tmp_path):
    """DICOM trigger times: phases as fractions of each cine's own cycle."""
    from cardiorecon.phase import _by_triggers
    from cardiorecon.volume import Volume

    sax = Volume(np.zeros((2, 2, 2, 20)), np.eye(4), {"trigger_times_ms": list(np.arange(20) * 40.0)})  # 800 ms
    view = Volume(np.zeros((2, 2, 1, 25)), np.eye(4), {"trigger_times_ms": list(np.arange(25) * 36.0)})  # 900 ms
    pairing = _by_triggers(sax, view)
    assert pairing[0] == 0 and pairing[10] in (12, 13)  # half the cycle
    assert pairing[19] == 24  # the last SAX frame pairs with the last LAX frame, not the first


def test_discover_series_subfolders_and_unrecognised(tmp_path):
    """A DICOM study with series in subfolders is one study; an unrecognised folder is skipped and
    reported; subject folders of different studies stay separate."""
    from test_io_layouts import _write_dicom  # the DICOM writer of the layout tests

    study = tmp_path / "data" / "patient1"
    for s, uid in ((1, "1.2.3.1"), (2, "1.2.3.2")):
        (study / f"Se{s}").mkdir(parents=True)
        _write_dicom(study / f"Se{s}" / "im1.dcm", 4, 4, [0, 0, 10.0 * s], [1, 0, 0, 0, 1, 0], uid)
    (tmp_path / "data" / "junk").mkdir()
    (tmp_path / "data" / "junk" / "notes.dat").write_text("x")
    other = tmp_path / "data" / "subjB"
    other.mkdir()
    _save(other / "sa.nii.gz", np.zeros((4, 4, 2, 2), np.float32), SAX_A)
    found = discover_studies([tmp_path / "data"])
    assert found.studies == [study, other]
    assert [p.name for p, _ in found.skipped] == ["junk"]


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf")])
def test_bad_lax_thickness_override_is_a_clean_error(tmp_path, bad):
    from cardiorecon.errors import InputError

    _save(tmp_path / "sa.nii.gz", _beating(frames=5, es=2), SAX_A)
    _save(tmp_path / "la_4ch.nii.gz", np.ones((24, 24, 1, 5), np.float32), _lax_affine())
    with pytest.raises(InputError, match="lax-thickness"):
        read_study(tmp_path, lax_thickness_mm=bad)


def test_bad_frame_list_is_a_clean_error(tmp_path):
    from cardiorecon.errors import InputError
    from cardiorecon.evaluate import frames_to_score

    _save(tmp_path / "sa.nii.gz", _beating(frames=5, es=2), SAX_A)
    study = read_study(tmp_path)
    assert frames_to_score(study, "0,3") == [0, 3]
    with pytest.raises(InputError):
        frames_to_score(study, "0,9")


def test_a_folder_reached_twice_or_through_a_symlink_loop_is_one_study(tmp_path):
    """Issue 29: a folder reached twice through symbolic links (or a loop) ran the same subject 2-3 times."""
    data = tmp_path / "data"
    subj = data / "s1"
    subj.mkdir(parents=True)
    _save(subj / "sa.nii.gz", np.zeros((4, 4, 2, 2), np.float32), SAX_A)
    (data / "s1_again").symlink_to("s1")
    (data / "loop").symlink_to(".")  # data/loop/loop/... is data again
    (subj / "up").symlink_to("..")
    found = discover_studies([data, subj])
    assert found.studies == [subj]
    why = dict(found.skipped)
    assert "symbolic link" in why[data / "s1_again"] and str(subj) in why[data / "s1_again"]
    assert "symbolic link" in why[data / "loop"]
    assert "given twice" in why[subj]


def test_a_one_frame_study_is_its_own_ed(tmp_path):
    """Issue 29: a single 3D NIfTI (or a one-frame UK Biobank sa.nii.gz with its labels) failed with
    "ED frame unknown" on the default --frames ed."""
    vol = _beating(frames=50)[..., 0]
    _save(tmp_path / "one.nii.gz", vol, SAX_A)
    study = read_study(tmp_path / "one.nii.gz")
    assert (study.ed_frame, study.es_frame) == (0, None) and study.resolve_frames("ed") == [0]
    subj = tmp_path / "subj"
    subj.mkdir()
    _save(subj / "sa.nii.gz", vol, SAX_A)
    _save(subj / "label_sa.nii.gz", (vol > 50).astype(np.uint8), SAX_A)
    study = read_study(subj)
    assert study.ed_frame == 0 and study.sax_labels is not None


@pytest.mark.parametrize("text,frames", [("ed", [0]), ("es", [17]), ("ed,es", [0, 17]), ("es,ed", [17, 0]),
                                         ("all", list(range(50))), ("3", [3]), ("0,5,5", [0, 5]), ("ed,3", [0, 3])])
def test_frames_mean_the_same_everywhere(tmp_path, text, frames):
    """Issue 29: `--frames` is one grammar: ed, es, ed,es, all, indices from 0."""
    from cardiorecon.evaluate import frames_to_score

    _save(tmp_path / "sa.nii.gz", _beating(frames=50), SAX_A)
    (tmp_path / "subject.json").write_text('{"ed_frame": 0, "es_frame": 17}')
    study = read_study(tmp_path)
    assert study.resolve_frames(text) == frames == study.resolve_frames(str(text)) == frames_to_score(study, text)


@pytest.mark.parametrize("text", ["-1", "0,-7", "ed,-2"])
def test_a_negative_frame_is_refused_not_the_last_one(tmp_path, text):
    """Issue 29: `--frames=-1` silently meant the last frame."""
    from cardiorecon.volume import FrameSelectionError

    _save(tmp_path / "sa.nii.gz", _beating(frames=5, es=2), SAX_A)
    study = read_study(tmp_path)
    with pytest.raises(FrameSelectionError, match="negative"):
        study.resolve_frames(text)
    with pytest.raises(FrameSelectionError, match="negative"):
        study.resolve_frames([-1])
