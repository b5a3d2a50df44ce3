"""The atomic writer and the single-file checkpoint: no umask toggling, data flushed before the
rename, one rename per checkpoint, nothing half-written left behind."""

import os
import stat

import numpy as np
import pytest
import torch

from cardiorecon.errors import GeometryWarning, InputError, OutputError
from cardiorecon.io.nifti import atomic_write, write_nifti
from cardiorecon.training.checkpoint import load_state, save_state
from cardiorecon.volume import Volume


def test_atomic_write_never_touches_the_umask_and_gives_the_usual_mode(tmp_path, monkeypatch):
    current = os.umask(0o022)
    os.umask(current)
    try:
        os.umask(0o027)

        def no_umask(*_):
            raise AssertionError("os.umask toggled (races between threads)")

        monkeypatch.setattr(os, "umask", no_umask)
        path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        monkeypatch.undo()
        os.umask(current)


def test_atomic_write_flushes_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "b.txt", lambda tmp: tmp.write_text("data"))
    assert events[:2] == ["fsync", "replace"]
    assert (tmp_path / "b.txt").read_text() == "data"


def test_atomic_write_into_an_unwritable_place_is_a_clean_error(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write(tmp_path / "dir.txt", lambda tmp: tmp.write_text("x"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="cannot write here"):
                atomic_write(ro / "c.txt", lambda tmp: tmp.write_text("x"))
        finally:
            ro.chmod(0o700)


def test_a_sheared_affine_is_written_with_a_warning_and_an_exact_sform(tmp_path):
    import nibabel as nib

    affine = np.array([[2.0, 0.6, 0, 0], [0, 2.0, 0, 0], [0, 0, 10.0, 0], [0, 0, 0, 1]])
    vol = Volume(np.ones((8, 8, 4), np.float32), affine)
    with pytest.warns(GeometryWarning, match=r"sheared\.nii\.gz.*sheared.*mm off"):
        write_nifti(vol, tmp_path / "sheared.nii.gz")
    img = nib.load(str(tmp_path / "sheared.nii.gz"))
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)  # a rigid affine writes silently
        write_nifti(Volume(np.ones((8, 8, 4), np.float32), np.diag([2.0, 2.0, 10.0, 1.0])), tmp_path / "plain.nii.gz")


def _state():
    return {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 7,
            "loops": {"fit": (1, [2, 3])}, "name": "x"}


def test_checkpoint_is_one_file_and_round_trips(tmp_path):
    save_state(_state(), tmp_path / "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    back = load_state(tmp_path / "last")
    torch.testing.assert_close(back["state_dict"]["w"], _state()["state_dict"]["w"])
    assert back["global_step"] == 7 and back["loops"] == {"fit": (1, [2, 3])}


def test_a_crash_while_checkpointing_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import safetensors.torch

    save_state(_state(), tmp_path / "last")

    def crash(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    newer = _state()
    newer["global_step"] = 8
    with pytest.raises(KeyboardInterrupt):
        save_state(newer, tmp_path / "last")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    assert load_state(tmp_path / "last")["global_step"] == 7


def test_old_two_file_checkpoints_still_load_and_junk_is_refused(tmp_path):
    import json

    from safetensors.torch import save_file

    save_file({"state_dict.w": torch.ones(2)}, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(json.dumps({"__dict__": [["state_dict", {"__dict__": [
        ["w", {"__tensor__": "state_dict.w"}]]}], ["global_step", 3]]}))
    back = load_state(tmp_path / "old")
    assert back["global_step"] == 3 and back["state_dict"]["w"].tolist() == [1.0, 1.0]
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04 a pickle, not safetensors")
    with pytest.raises(InputError, match=r"junk\.safetensors: unreadable checkpoint"):
        load_state(tmp_path / "junk")


def test_model_cards_name_no_machine_paths():
    import re
    from pathlib import Path

    import cardiorecon

    cards = sorted(Path(cardiorecon.__file__).parent.glob("weights/*/MODEL_CARD.md"))
    assert cards
    for card in cards:
        found = re.findall(r"(?<![\w.])/(?:work|home|tmp|root|Users|mnt)/\S*", card.read_text())
        assert not found, f"{card}: machine paths {found[:3]}"


def test_an_interrupted_reconstruct_leaves_no_partial_file(tmp_path, monkeypatch):
    import nibabel as nib

    from cardiorecon.io import read_study
    from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject
    from cardiorecon.recon import reconstruct, write_reconstruction

    folder = write_subject(generate(sample_params(4, "healthy", num_frames=4),
                                    AcquisitionConfig(sax_matrix=48, lax_matrix=32), truth=False), tmp_path / "s")
    study = read_study(folder)
    rec = reconstruct(study, "linear", factor=2, frames="ed")
    real_save, calls = nib.save, []

    def killed_on_second_file(img, filename):
        calls.append(filename)
        if len(calls) == 2:
            open(filename, "wb").write(b"half a NIfTI")
            raise KeyboardInterrupt  # Ctrl-C while the second output is being written
        real_save(img, filename)

    monkeypatch.setattr(nib, "save", killed_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        write_reconstruction(rec, tmp_path / "out", study, native=True)
    monkeypatch.undo()
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == ["recon_linear.nii.gz"]  # the finished file, whole; no temporary, no half file
    assert nib.load(str(tmp_path / "out" / "recon_linear.nii.gz")).shape[2] == 2 * study.sax.spatial_shape[2] - 1


def test_a_qform_a_few_thousandths_of_a_mm_off_is_not_reported(tmp_path):
    """Issue 29: every UK Biobank command printed "up to 0.00 mm off": a float32 affine a few thousandths
    of a mm from a rigid one. Below 0.01 mm nothing is said; above, the distance is never printed as 0.00."""
    import warnings

    affine = np.array([[1.8, 1e-6, 0, 0], [0, 1.8, 0, 0], [0, 0, 10.0, 0], [0, 0, 0, 1]])
    affine[0, 1] = 2e-5  # 0.003 mm at the far corner of a 208-pixel row
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        write_nifti(Volume(np.ones((208, 208, 4), np.float32), affine), tmp_path / "ukbb.nii.gz")
    affine[0, 1] = 2e-4  # 0.029 mm
    with pytest.warns(GeometryWarning) as caught:
        write_nifti(Volume(np.ones((208, 208, 4), np.float32), affine), tmp_path / "more.nii.gz")
    assert "0.00 mm" not in str(caught[0].message) and "0.029 mm" in str(caught[0].message)
