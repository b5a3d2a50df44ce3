"""Breath-hold alignment (cardiorecon.align): shifts recovered on phantoms, no false correction,
the geometry of the per-slice resampling, the no-LAX and --lax-views cases, and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiorecon.align import AlignConfig, Alignment, align_study, estimate_alignment, resolve_alignment
from cardiorecon.geometry import resample, resample_inplane, shift_slices, shifted_slice_affine, voxel_to_world
from cardiorecon.phantom import AcquisitionConfig
from cardiorecon.phantom.acquire import generate
from cardiorecon.phantom.anatomy import sample_params
from cardiorecon.volume import Study, Volume
from conftest import oblique_affine


def _phantom(shift_mm: float) -> tuple[Study, np.ndarray]:
    """A small heart-failure phantom (8 frames, no truth) and the breath-hold shifts it applied."""
    subject = generate(sample_params(1000, "heart-failure", 8), AcquisitionConfig(breath_hold_shift_mm=shift_mm),
                       truth=False)
    Z = subject.sax.spatial_shape[2]
    shifts = subject.info["breath_hold_shifts_mm"]
    study = Study(sax=subject.sax, lax=dict(subject.lax), ed_frame=0, es_frame=subject.info["es_frame"],
                  meta={"subject": "hf_1000"})
    return study, np.zeros((Z, 2)) if shifts is None else np.asarray(shifts)


@pytest.fixture(scope="module")
def shifted():
    return _phantom(4.0)


@pytest.fixture(scope="module")
def still():
    return _phantom(0.0)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


# ------------------------------------------------------------------------------- geometry

def test_shifted_slice_affine_is_the_phantom_convention():
    a = oblique_affine(spacing=(1.8, 1.6, 10.0))
    s = np.array([2.5, -1.0])
    moved = shifted_slice_affine(a, 3, s)
    ui, uj = a[:3, 0] / 1.8, a[:3, 1] / 1.6  # phantom.acquire.grid_points: base + s0 u_i + s1 u_j
    np.testing.assert_allclose(voxel_to_world(moved, [4, 5, 0]), voxel_to_world(a, [4, 5, 3]) + 2.5 * ui - 1.0 * uj,
                               atol=1e-9)


def test_shift_slices_moves_each_slice_by_its_own_pixels():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 18, 3, 2)).astype(np.float32)
    vol = Volume(data, oblique_affine(spacing=(2.0, 1.5, 10.0)))
    # Slice 1 was acquired 2 pixels further along i (4 mm) and 1 pixel back along j (-1.5 mm): the
    # anatomy at header voxel (i, j) is in the acquired image at (i - 2, j + 1).
    shifts = np.array([[0.0, 0.0], [4.0, -1.5], [0.0, 0.0]])
    out = shift_slices(vol, shifts).data
    np.testing.assert_array_equal(out[:, :, 0], data[:, :, 0])
    np.testing.assert_array_equal(out[:, :, 2], data[:, :, 2])
    np.testing.assert_allclose(out[2:, :-1, 1], data[:-2, 1:, 1], atol=1e-5)
    assert np.all(out[:2, :, 1] == 0)  # outside the acquired slice


def test_zero_shifts_leave_the_slices_identical():
    rng = np.random.default_rng(1)
    vol = Volume(rng.integers(0, 900, size=(16, 16, 4, 3)).astype(np.int16), oblique_affine())
    np.testing.assert_array_equal(shift_slices(vol, np.zeros((4, 2))).data, vol.data)
    centre = vol.center_world
    plain = resample_inplane(vol, 1.2, 20, centre)
    np.testing.assert_array_equal(resample_inplane(vol, 1.2, 20, centre, sax_shifts_mm=np.zeros((4, 2))).data,
                                  plain.data)
    study = Study(sax=vol)
    assert align_study(study, Alignment(np.zeros((4, 2)), [])) is study


def test_resample_inplane_with_shifts_equals_shifting_first():
    """The shifts ride in the single in-plane resampling: same result as shifting on the input grid
    and then resampling (up to the second interpolation, so compare on a smooth image)."""
    ii, jj = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    smooth = np.sin(ii / 5.0) + np.cos(jj / 7.0)
    data = np.stack([smooth + k for k in range(3)], -1)[..., None].astype(np.float32)
    vol = Volume(data, oblique_affine(spacing=(1.5, 1.5, 10.0)))
    shifts = np.array([[1.0, -2.0], [0.0, 0.0], [-3.0, 0.5]])
    once = resample_inplane(vol, 1.8, 16, vol.center_world, sax_shifts_mm=shifts)
    twice = resample_inplane(shift_slices(vol, shifts), 1.8, 16, vol.center_world)
    np.testing.assert_allclose(once.data, twice.data, atol=0.02)
    np.testing.assert_allclose(once.affine, resample_inplane(vol, 1.8, 16, vol.center_world).affine)


# ------------------------------------------------------------------------------ estimation

def test_phantom_breath_hold_shifts_are_recovered(shifted):
    study, truth = shifted
    assert np.abs(truth).max() > 2.0  # the phantom did move the slices
    a = estimate_alignment(study)
    # Benchmark (docs/BENCHMARKS.md): 5 HF phantoms, 25 frames, RMS error 0.1 mm; tolerance 0.5 / 1 mm.
    assert _rms(a.sax_shifts_mm, truth) <= 0.5
    assert np.abs(a.sax_shifts_mm - truth).max() <= 1.0
    assert a.mean_ncc("after") > a.mean_ncc("before") + 0.02
    assert len(a.lines) >= 2 * study.sax.spatial_shape[2]


def test_large_known_shifts_are_recovered(still):
    """Shifts applied by hand (up to 8 mm) to a still phantom are found (the coarse search is global)."""
    study, _ = still
    Z = study.sax.spatial_shape[2]
    known = np.zeros((Z, 2))
    known[2] = [8.0, -3.0]
    known[5] = [-6.5, 7.0]
    known[7] = [2.25, 0.0]
    # Acquired slice k shows the anatomy at header + known[k]: the anatomy image moved by -known[k].
    moved = dataclasses.replace(study, sax=shift_slices(study.sax, -known))
    a = estimate_alignment(moved)
    assert np.abs(a.sax_shifts_mm - known).max() <= 1.0
    assert _rms(a.sax_shifts_mm, known) <= 0.5


def test_still_phantom_gets_no_false_correction(still):
    study, truth = still
    assert not truth.any()
    a = estimate_alignment(study)
    assert _rms(a.sax_shifts_mm, truth) <= 0.3
    assert a.mean_ncc("after") >= a.mean_ncc("before") - 1e-9


def test_no_lax_study_is_unchanged_with_a_note(still):
    study, _ = still
    bare = Study(sax=study.sax)
    a = estimate_alignment(bare)
    assert a.is_identity and a.notes and "no LAX" in a.notes[0]
    assert align_study(bare, a).sax is bare.sax
    assert resolve_alignment(bare, "auto") is None
    assert resolve_alignment(bare, "on").is_identity
    assert resolve_alignment(study, "off") is None


def test_lax_views_exclude_the_other_views(shifted):
    study, truth = shifted
    only = estimate_alignment(study, ["2ch", "4ch"])
    assert {line["view"] for line in only.lines} == {"2ch", "4ch"}
    # Scrambling the excluded view changes nothing.
    rng = np.random.default_rng(3)
    noise = study.lax["3ch"].with_data(rng.normal(size=study.lax["3ch"].shape).astype(np.float32))
    scrambled = dataclasses.replace(study, lax={**study.lax, "3ch": noise})
    again = estimate_alignment(scrambled, ["2ch", "4ch"])
    np.testing.assert_array_equal(again.sax_shifts_mm, only.sax_shifts_mm)
    assert _rms(only.sax_shifts_mm, truth) <= 0.7
    # ... whereas using the scrambled view does change the estimate.
    assert not np.array_equal(estimate_alignment(scrambled).sax_shifts_mm, only.sax_shifts_mm)


def test_alignment_json_round_trip(shifted):
    study, _ = shifted
    a = estimate_alignment(study, ["2ch"], AlignConfig(fine_steps_mm=(0.25,)))
    b = Alignment.from_json(json.loads(json.dumps(a.to_json())))
    np.testing.assert_allclose(b.sax_shifts_mm, a.sax_shifts_mm, atol=1e-4)
    assert b.lax_views == ["2ch"] and b.config == a.config and len(b.lines) == len(a.lines)


# ---------------------------------------------------------------------------- pipeline, CLI

def test_reconstruct_applies_the_shifts_on_the_working_grid(shifted):
    from cardiorecon.recon import reconstruct

    study, truth = shifted
    known = Alignment(truth, list(study.lax))
    off = reconstruct(study, "linear", factor=2, frames=[0])
    on = reconstruct(study, "linear", factor=2, frames=[0], align=known)
    assert on.alignment is known and off.alignment is None
    np.testing.assert_allclose(on.volume.affine, off.volume.affine)
    # The acquired slices of the aligned run are the input slices sampled from where they were acquired.
    grid = off.grid.image
    k = 4
    expected = resample(Volume(study.sax.data[:, :, k:k + 1, 0], shifted_slice_affine(study.sax.affine, k, truth[k])),
                        grid.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, k], [0, 0, 0, 1.0]]),
                        (*grid.spatial_shape[:2], 1)).data[..., 0]
    np.testing.assert_allclose(on.grid.image.data[:, :, k, 0], on.grid.intensity.forward(expected), atol=1e-4)
    assert not np.allclose(on.grid.image.data[:, :, k, 0], off.grid.image.data[:, :, k, 0])


def test_align_command_writes_json_and_aligned_sax(tmp_path, shifted):
    from cardiorecon.cli import app
    from cardiorecon.io import read_study
    from cardiorecon.io.nifti import write_nifti

    study, truth = shifted
    folder = tmp_path / "subj"
    folder.mkdir()
    write_nifti(study.sax, folder / "sa.nii.gz")
    for v, vol in study.lax.items():
        write_nifti(vol, folder / f"la_{v}.nii.gz")
    runner = CliRunner()
    res = runner.invoke(app, ["align", str(folder), "--out", str(tmp_path / "out"), "--lax-views", "2ch,4ch"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "alignment.json").read_text())
    assert data["lax_views"] == ["2ch", "4ch"]
    assert _rms(np.asarray(data["sax_shifts_mm"]), truth) <= 0.7
    assert {"slice", "view", "ncc_before", "ncc_after"} <= set(data["lines"][0])
    aligned = read_study(tmp_path / "out" / "sa_aligned.nii.gz").sax
    np.testing.assert_allclose(aligned.affine, study.sax.affine, atol=1e-4)
    assert aligned.shape == study.sax.shape
    bad = runner.invoke(app, ["align", str(folder), "--out", str(tmp_path / "o2"), "--lax-views", "5ch"])
    assert bad.exit_code == 2 and "5ch" in bad.output
    bad = runner.invoke(app, ["reconstruct", str(folder), "--method", "linear", "--align", "maybe",
                              "--out", str(tmp_path / "o3")])
    assert bad.exit_code == 2 and "--align" in bad.output


def test_align_command_without_lax_copies_the_input(tmp_path, still):
    from cardiorecon.cli import app
    from cardiorecon.io import read_study
    from cardiorecon.io.nifti import write_nifti

    study, _ = still
    folder = tmp_path / "bare"
    folder.mkdir()
    write_nifti(study.sax, folder / "sa.nii.gz")
    res = CliRunner().invoke(app, ["align", str(folder), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "no LAX view" in res.output
    np.testing.assert_array_equal(read_study(tmp_path / "out" / "sa_aligned.nii.gz").sax.data,
                                  read_study(folder / "sa.nii.gz").sax.data)


def test_report_section_table_and_figure(tmp_path):
    from cardiorecon.report.alignment import alignment_section, alignment_table

    a = Alignment(np.array([[1.0, -2.0], [0.0, 0.0]]), ["2ch"],
                  lines=[{"slice": 0, "view": "2ch", "points": 20, "ncc_before": 0.8, "ncc_after": 0.9}])
    found = {("case1", ("2ch",)): a, ("case2", ()): None}
    (row,) = alignment_table(found)
    assert row["shift_rms_mm"] == pytest.approx(np.sqrt(5 / 2)) and row["max_shift_mm"] == 2.0
    secs = alignment_section(found, tmp_path)
    assert "1.58" in secs[0]["html"] and "0.800" in secs[0]["html"] and "0.900" in secs[0]["html"]
    assert secs[1]["png"].is_file()
    assert alignment_section({("case2", ()): None}, tmp_path) == []


def test_report_section_draws_the_lines_before_and_after(tmp_path, shifted):
    from cardiorecon.report.alignment import alignment_section

    study, truth = shifted
    lines = [{"slice": k, "view": "2ch", "points": 50, "ncc_before": 0.9, "ncc_after": 0.95} for k in range(3)]
    secs = alignment_section({("hf_1000", ("2ch", "4ch")): Alignment(truth, ["2ch", "4ch"], lines=lines)}, tmp_path,
                             study)
    assert [s["title"] for s in secs][-1] == "Alignment: intersection lines before and after"
    assert (tmp_path / "alignment_overlay.png").is_file()


def test_lax_holdout_aligns_with_the_guiding_views_only(tmp_path, shifted):
    from cardiorecon.evaluate import Evaluator, lax_holdout_protocol
    from cardiorecon.io.nifti import write_nifti

    study, _ = shifted
    folder = tmp_path / "hf_1000"
    folder.mkdir()
    write_nifti(study.sax, folder / "sa.nii.gz")
    for v in ("2ch", "4ch"):
        write_nifti(study.lax[v], folder / f"la_{v}.nii.gz")
    ev = Evaluator(["linear"], align="on", progress=False, echo=lambda _m: None)
    rows = lax_holdout_protocol(ev, [folder], frames="0", factor=2)
    assert {r["structure"] for r in rows} == {"lax_2ch", "lax_4ch"}
    keys = sorted(views for _case, views in ev.figures["alignment"])
    assert keys == [("2ch",), ("4ch",)]  # each estimate without its held-out view
    off = Evaluator(["linear"], align="off", progress=False, echo=lambda _m: None)
    lax_holdout_protocol(off, [folder], frames="0", factor=2)
    assert not off.figures.get("alignment")


def test_lax_offsets_absorb_a_view_off_its_header(shifted):
    """A LAX view acquired 2.5 mm off its header plane (its own breath-hold) biases the SAX shifts;
    estimating the views' offsets along their normals removes most of that bias."""
    from cardiorecon.align import offset_views

    study, truth = shifted
    view = study.lax["4ch"]
    affine = view.affine.copy()
    affine[:3, 3] -= 2.5 * view.slice_normal  # the header says 2.5 mm below where the view was acquired
    moved = dataclasses.replace(study, lax={**study.lax, "4ch": Volume(view.data, affine, dict(view.meta))})
    plain = estimate_alignment(moved)
    with_offsets = estimate_alignment(moved, config=AlignConfig(lax_offsets=True))
    assert _rms(with_offsets.sax_shifts_mm, truth) < 0.6 * _rms(plain.sax_shifts_mm, truth)
    assert with_offsets.lax_offsets_mm["4ch"] > 0.5
    assert with_offsets.mean_ncc("after") >= plain.mean_ncc("after")
    again = offset_views(moved, with_offsets)
    np.testing.assert_allclose(again.lax["4ch"].affine[:3, 3] - affine[:3, 3],
                               with_offsets.lax_offsets_mm["4ch"] * view.slice_normal, atol=1e-9)
    assert offset_views(study, plain) is study


def test_alignment_json_is_valid_json_where_no_ncc_was_measured(still, tmp_path):
    """Issue 29: alignment.json held NaN (mean NCC of no line), which is not JSON; now null."""
    from cardiorecon.align import write_alignment

    study, _ = still
    bare = Study(sax=study.sax)
    write_alignment(estimate_alignment(bare), bare, tmp_path)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    data = json.loads((tmp_path / "alignment.json").read_text(), parse_constant=refuse)
    assert data["mean_ncc_before"] is None and data["mean_ncc_after"] is None
    assert Alignment.from_json(data).is_identity
