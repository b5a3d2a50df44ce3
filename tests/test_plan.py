"""The study plan: computed once from the images, written as plan.json, read back to the same
reconstruction; `cardiorecon plan` and `reconstruct --plan`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiorecon.cli import app
from cardiorecon.errors import InputError
from cardiorecon.io import read_study
from cardiorecon.plan import PLAN_FILE, make_plan, read_plan, write_plan
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.volume import Volume

runner = CliRunner()
GRID = (4.0, 32)  # a coarse working grid: fast
CONFIG = ReconConfig(grid_spacing_mm=GRID[0], grid_size=GRID[1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A phantom with breath-hold shifts, so the alignment is not zero."""
    root = tmp_path_factory.mktemp("plan")
    res = runner.invoke(app, ["phantom", "--out", str(root), "--seed", "11", "--frames", "4", "--breath-hold"])
    assert res.exit_code == 0, res.output
    return root / "healthy_0011"


@pytest.fixture(scope="module")
def plan(folder):
    return make_plan(read_study(folder), *GRID, align="auto")


def test_the_plan_holds_what_every_method_needs(plan, folder):
    study = read_study(folder)
    info = json.loads((folder / "subject.json").read_text())
    assert plan.sax_shape == study.sax.shape
    assert (plan.ed_frame, plan.es_frame) == (study.ed_frame, study.es_frame)
    assert set(plan.phase_pairing) == set(study.lax) and all(len(p) == study.num_frames for p in plan.phase_pairing.values())
    assert plan.grid_spacing_mm == 4.0 and plan.grid_size >= 32 and plan.grid_size % 16 == 0
    assert plan.grid_size * plan.grid_spacing_mm >= plan.heart_region.size_mm
    # the alignment recovers the phantom's breath-hold shifts (to a fraction of a pixel)
    truth = np.asarray(info["breath_hold_shifts_mm"])
    assert np.sqrt(np.mean((plan.alignment.sax_shifts_mm - truth) ** 2)) < 1.0 < np.sqrt(np.mean(truth ** 2))


def test_plan_json_round_trip_gives_the_same_reconstruction(plan, folder, tmp_path):
    path = write_plan(plan, tmp_path)
    assert path.name == PLAN_FILE
    again = read_plan(tmp_path)
    assert again.to_json() == plan.to_json()
    np.testing.assert_array_equal(again.alignment.sax_shifts_mm, plan.alignment.sax_shifts_mm)  # full precision
    np.testing.assert_array_equal(again.heart_region.centre, plan.heart_region.centre)
    made = reconstruct(read_study(folder), "linear", factor=3, frames=[0, 1], config=CONFIG, align="auto")
    reused = reconstruct(read_study(folder), "linear", factor=3, frames=[0, 1], config=CONFIG, plan=again)
    np.testing.assert_array_equal(reused.normalised.data, made.normalised.data)
    np.testing.assert_array_equal(reused.volume.affine, made.volume.affine)
    # the plan decides: with the alignment left out the reconstruction is another one
    unaligned = dataclasses.replace(again, alignment=None)
    other = reconstruct(read_study(folder), "linear", factor=3, frames=[0, 1], config=CONFIG, plan=unaligned)
    assert not np.array_equal(other.normalised.data, made.normalised.data)


def test_the_plan_never_reads_the_reference_labels(plan, folder):
    study = read_study(folder)
    assert study.sax_labels is not None
    bare = dataclasses.replace(study, sax_labels=None, lax_labels={})

    def facts(p):  # all but the time the alignment took
        d = p.to_json()
        d["alignment"].pop("seconds")
        return d

    assert facts(make_plan(bare, *GRID, align="auto")) == facts(plan)


def test_a_plan_for_another_study_or_grid_is_refused(plan, folder, tmp_path):
    study = read_study(folder)
    short = dataclasses.replace(study, sax=Volume(study.sax.data[:, :, :-1], study.sax.affine, dict(study.sax.meta)),
                                sax_labels=None)
    with pytest.raises(InputError, match="plan was made for a SAX of shape"):
        reconstruct(short, "linear", factor=2, frames=[0], config=CONFIG, plan=plan)
    with pytest.raises(InputError, match="does not fit this model"):
        reconstruct(study, "linear", factor=2, frames=[0], plan=plan)  # the tiny grid: 2 mm, not 4
    (tmp_path / PLAN_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a cardiorecon plan"):
        read_plan(tmp_path / PLAN_FILE)


def test_plan_command_and_reconstruct_with_plan(folder, tmp_path):
    res = runner.invoke(app, ["plan", str(folder), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    for words in ("heart region:", "working grid:", "alignment to LAX", "phase pairing 4ch", "ED frame 0"):
        assert words in res.output, words
    written = json.loads((tmp_path / "p" / PLAN_FILE).read_text())
    res = runner.invoke(app, ["reconstruct", str(folder), "--method", "linear", "--frames", "0", "--no-native",
                              "--plan", str(tmp_path / "p" / PLAN_FILE), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / PLAN_FILE).read_text()) == written  # written beside the output, as reused
    res = runner.invoke(app, ["reconstruct", str(folder), "--method", "linear", "--plan", str(tmp_path / "none.json"),
                              "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "no such plan file" in res.output
