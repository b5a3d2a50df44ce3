"""The method table: a method defined in a test runs through `reconstruct` and `evaluate` with no other
change; the built-in methods, their needs, and the dispatch decisions that used to disagree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiorecon.cli import app
from cardiorecon.evaluate import Evaluator, phantom_protocol
from cardiorecon.io import read_study
from cardiorecon.recon import METHODS, ReconConfig, ReconMethod, get_method, method_names, reconstruct, register_method
from cardiorecon.recon.registry import unregister_method

runner = CliRunner()


@dataclass(frozen=True)
class MidpointOptions:
    weight: float = 0.5  # of the upper neighbour


class Midpoint(ReconMethod):
    """Every new slice: (1 - weight) * lower + weight * upper neighbour, whatever its place in the gap."""

    name = "toy-midpoint"
    summary = "a method of the test's own"
    seconds_per_frame = "0 s"
    Options = MidpointOptions

    def reconstruct_frame(self, work, index, frame):
        stack, f = work.stack(frame), work.factor
        X, Y, Z = stack.shape
        out = np.empty((X, Y, (Z - 1) * f + 1), np.float32)
        out[:, :, ::f] = stack
        for k in range(Z - 1):
            for j in range(1, f):
                out[:, :, k * f + j] = (1 - self.options.weight) * stack[:, :, k] + self.options.weight * stack[:, :, k + 1]
        return out


class Lower(Midpoint):
    name = "toy-lower"

    @classmethod
    def options_from(cls, config):
        return MidpointOptions(weight=0.0)


@pytest.fixture
def toy():
    register_method(Midpoint)
    register_method(Lower)
    yield Midpoint
    unregister_method(Midpoint.name)
    unregister_method(Lower.name)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    res = runner.invoke(app, ["phantom", "--out", str(root), "--seed", "7", "--frames", "4", "--cohort", "heart-failure"])
    assert res.exit_code == 0, res.output
    return root / "hf_0007"


def test_a_method_of_the_test_runs_through_reconstruct(toy, phantom_folder):
    assert "toy-midpoint" in method_names() and get_method("toy-midpoint") is Midpoint
    study = read_study(phantom_folder)
    rec = reconstruct(study, "toy-midpoint", factor=2, frames=[0])
    lin = reconstruct(study, "linear", factor=2, frames=[0])
    # at factor 2 every new slice is halfway: the toy equals linear interpolation exactly
    np.testing.assert_array_equal(rec.normalised.data, lin.normalised.data)
    np.testing.assert_array_equal(rec.normalised.data[:, :, ::2, 0], rec.grid.image.data[..., 0])
    assert rec.method == "toy-midpoint" and rec.lax_views == [] and rec.plan.to_json() == lin.plan.to_json()


def test_a_method_of_the_test_runs_through_evaluate(toy, phantom_folder):
    ev = Evaluator(["toy-midpoint", "linear", "toy-lower"], progress=False, echo=lambda s: None)
    rows = phantom_protocol(ev, [phantom_folder], factor=2)
    image = {(r["method"], r["frame"]): r for r in rows if r["structure"] == "image"}
    assert {m for m, _ in image} == {"toy-midpoint", "linear", "toy-lower"}
    for (m, t), r in image.items():
        if m == "toy-midpoint":
            assert r["ssim"] == pytest.approx(image[("linear", t)]["ssim"], abs=1e-12)
    # a method whose options copy the lower slice scores differently: evaluate ran the toy's own output
    assert all(r["ssim"] < image[("linear", r["frame"])]["ssim"] for r in rows
               if r["method"] == "toy-lower" and r["structure"] == "image")


def test_an_unknown_method_and_a_second_class_of_the_same_name_are_refused(toy):
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from nearest"):
        get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (ReconMethod,), {"name": "toy-midpoint"}))


def test_the_built_in_table():
    assert method_names()[:8] == ("nearest", "linear", "cubic", "register", "fusion", "diffae", "lag", "dmcvr")
    needs = {n: get_method(n).weights for n in method_names()}
    assert needs == {"nearest": None, "linear": None, "cubic": None, "register": None, "fusion": None,
                     "diffae": "diffae", "lag": "diffae", "dmcvr": "dmcvr", "selfsr": None}
    assert [n for n in method_names() if get_method(n).guided_by_lax] == ["fusion", "lag", "selfsr"]
    # every built-in method but selfsr (issue 26: measured below register) is in the default lists
    assert METHODS == method_names()[:8] and [n for n in method_names() if not get_method(n).in_defaults] == ["selfsr"]
    assert [n for n in method_names() if get_method(n).adaptable] == ["diffae", "lag", "dmcvr"]
    assert all(get_method(n).seconds_per_frame for n in method_names())


def test_lag_init_decides_the_weights_everywhere():
    lag = get_method("lag")
    assert lag.weights_for(lag.options_from(ReconConfig())) == "diffae"
    assert lag.weights_for(lag.options_from(ReconConfig(lag_init="dmcvr"))) == "dmcvr"
    # evaluate (and through it cohort's options) ask the same table
    assert Evaluator(["lag"], config=ReconConfig(lag_init="dmcvr")).weights_needed("lag") == "dmcvr"
    assert Evaluator(["lag", "linear"]).weights_needed("lag") == "diffae"
    assert Evaluator(["linear"]).weights_needed("linear") is None


def test_an_unknown_lag_start_or_warm_start_is_refused():
    with pytest.raises(ValueError, match="unknown lag start 'dmcrv'"):
        ReconConfig(lag_init="dmcrv")
    with pytest.raises(ValueError, match="unknown lag warm start"):
        dataclasses.replace(ReconConfig(), lag_warm="sideways")


def test_the_methods_command_lists_every_method_with_its_needs():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    for name in method_names():
        assert any(line.startswith(name + " ") for line in res.output.splitlines()), name
    assert "needs: dmcvr weights" in res.output and "needs: no weights" in res.output
    assert "LAX views" in res.output and "per frame" in res.output
