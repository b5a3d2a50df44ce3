"""selfsr (issue 26): the degradation model, the LAX training pairs, the method on a phantom, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiorecon.geometry import voxel_to_world
from cardiorecon.recon.fusion import SliceProfile
from cardiorecon.recon.interpolate import interpolate_stack
from cardiorecon.recon.selfsr import (Sampling, SelfSRConfig, base_estimate, degrade, fit, inplane_pairs, lax_plane,
                                      prepare, slab_rows)
from cardiorecon.volume import Study, Volume

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = SelfSRConfig(steps=60, channels=8, layers=4, batch_size=8, crop=24, offsets=2)


def _profile(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    return sum(rng.normal() * np.sin(2 * np.pi * x / period + rng.uniform(0, 6)) for period in (7.0, 13.0, 29.0))


def test_degradation_along_an_in_plane_axis_is_the_sax_slab_sampling():
    """An image that varies along x like a dense stack varies along z: `degrade` along x gives the
    acquired slices of the stack through the SAX slice profile (fusion.SliceProfile, box), and its
    targets are the same slabs at the output step."""
    p, S, T, f = 1.0, 6.0, 4.0, 3  # pixel, slice step, thickness (mm), factor
    g = _profile(61).astype(np.float32)
    image = np.repeat(g[:, None], 5, axis=1)  # (x, y): varies along x only
    sampling = Sampling.of(p, S, T, f)
    acquired, target = degrade(image, sampling, offset_px=0.0)
    # The same profile along z of a dense stack at 1 mm, sampled as the SAX stack is: slices every 6
    # mm, 4 mm box, through the project's own slab model (exact integral of the linear interpolant).
    K = acquired.shape[0]
    stack = np.broadcast_to(g[: (K - 1) * 6 + 1], (2, 2, (K - 1) * 6 + 1)).astype(np.float32)
    sax = SliceProfile.build(K, 6, T / p, "box").apply(torch.from_numpy(stack.copy())).numpy()[0, 0]
    inner = slice(1, K - 1)  # the profile of the end slices is cut at the stack's ends there
    np.testing.assert_allclose(acquired[inner, 0], sax[inner], atol=2e-3)
    assert acquired.shape == (K, 5) and target.shape == ((K - 1) * f + 1, 5)
    np.testing.assert_allclose(target[::f], acquired)
    dense = SliceProfile.build(target.shape[0], 2, T / p, "box").apply(
        torch.from_numpy(np.broadcast_to(g[: (target.shape[0] - 1) * 2 + 1], (1, 1, (target.shape[0] - 1) * 2 + 1))
                         .astype(np.float32).copy())).numpy()[0, 0]
    np.testing.assert_allclose(target[1:-1, 0], dense[1:-1], atol=2e-3)
    # and a box narrower than nothing: thickness 0 samples the profile itself
    np.testing.assert_allclose(slab_rows(image, np.array([3.0, 9.0]), 0.0)[:, 0], g[[3, 9]], atol=1e-6)


def test_linear_base_is_the_stack_interpolation():
    rng = np.random.default_rng(1)
    acquired = rng.normal(size=(4, 7, 3)).astype(np.float32)
    dense = base_estimate(acquired, 3, "linear")
    ref = interpolate_stack(np.moveaxis(acquired, 0, -1), 3, "linear")
    np.testing.assert_allclose(dense, np.moveaxis(ref, -1, 0), atol=1e-6)
    assert base_estimate(acquired[:, :, 0], 3, "register").shape == (10, 7)


def test_lax_pairs_run_along_the_sax_normal_of_an_oblique_view():
    """A world pattern that varies only along the SAX normal, seen on an oblique LAX plane (70 degrees
    to the SAX slices, rotated about the normal): the resampled plane varies along its axis 0 as the
    pattern does along the normal, and not along axis 1."""
    from conftest import oblique_affine

    sax = oblique_affine(spacing=(2.0, 2.0, 10.0))
    n = sax[:3, 2] / np.linalg.norm(sax[:3, 2])
    a, b = sax[:3, 0] / 2.0, sax[:3, 1] / 2.0  # in-plane unit axes of the SAX
    tilt = np.radians(20.0)  # the LAX normal: in the SAX plane, tilted 20 degrees toward n
    m = np.cos(tilt) * (np.cos(0.7) * a + np.sin(0.7) * b) + np.sin(tilt) * n
    e0 = np.cross(m, a if abs(m @ a) < 0.9 else b)
    e0 /= np.linalg.norm(e0)
    e1 = np.cross(m, e0)
    centre = sax[:3, 3] + 30 * n
    lax = np.eye(4)
    lax[:3, 0], lax[:3, 1], lax[:3, 2] = 1.5 * e0, 1.5 * e1, 6.0 * m
    lax[:3, 3] = centre - 1.5 * 60 * (e0 + e1)
    pattern = lambda w: np.sin(((w - centre) @ n) / 6.0)  # noqa: E731
    ii, jj = np.meshgrid(np.arange(121), np.arange(121), indexing="ij")
    image = pattern(voxel_to_world(lax, np.stack([ii, jj, np.zeros_like(ii)], -1)))
    plane = lax_plane(image, lax, n, centre, 2.0, 40)
    assert plane is not None and plane.shape == (40, 40)
    along_rows = np.abs(np.diff(plane, axis=0)).mean()
    along_cols = np.abs(np.diff(plane, axis=1)).mean()
    assert along_cols < 0.02 * along_rows
    # row i lies (i - 19.5) * 2 mm from the centre along u, the normal projected on the view: n.u = cos(20 deg)
    expected = np.sin((np.arange(40) - 19.5) * 2.0 * np.cos(tilt) / 6.0)
    np.testing.assert_allclose(plane[:, 20], expected, atol=0.01)


@pytest.fixture(scope="module")
def phantom_study():
    from cardiorecon.phantom import AcquisitionConfig, generate, sample_params

    params = sample_params(23, "heart-failure", num_frames=4)
    subject = generate(params, AcquisitionConfig(), frames=[0])
    return Study(subject.sax, subject.lax, None, {}, 0, None, {"source": "phantom"}), subject


def _new_slice_ssim(rec, truth, t=0):
    from cardiorecon.geometry import resample
    from cardiorecon.metrics.image import ssim

    shape = rec.normalised.spatial_shape
    ref = rec.grid.intensity.forward(resample(truth.frame(t), rec.normalised.affine, shape, order=1).data)
    new = [k for k in range(shape[2]) if k % rec.factor]
    return ssim(rec.normalised.data[..., 0][:, :, new], ref[:, :, new], 2.0)


def test_selfsr_on_a_phantom_beats_linear_and_keeps_the_acquired_slices(phantom_study):
    import dataclasses

    from cardiorecon.recon import ReconConfig, reconstruct

    study, subject = phantom_study
    cfg = ReconConfig(method_options={"selfsr": dataclasses.replace(FAST, base="linear", steps=150)})
    rec = reconstruct(study, "selfsr", factor=5, frames=[0], config=cfg, align="off")
    lin = reconstruct(study, "linear", factor=5, frames=[0], align="off")
    s_sr, s_lin = _new_slice_ssim(rec, subject.truth), _new_slice_ssim(lin, subject.truth)
    assert s_sr > s_lin + 0.005, (s_sr, s_lin)
    np.testing.assert_array_equal(rec.normalised.data[:, :, ::5, 0], rec.grid.image.data[..., 0])
    assert any("lax-" in k for k in rec.notes[-1].split()) or "lax" in rec.notes[-1]
    assert rec.peak_memory_mb > 0 and rec.seconds_per_frame[0] > 0


def test_two_slices_fall_back_to_the_base_method_with_a_note():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(16, 16, 2)).astype(np.float32)
    notes: list[str] = []
    with pytest.warns(UserWarning, match="2 slices"):
        model = fit({0: stack}, Sampling.of(2.0, 10.0, 8.0, 2), dataclasses_replace(FAST, base="linear"), notes=notes)
    assert model.fallback and "linear alone" in notes[0]
    np.testing.assert_allclose(model.reconstruct(stack), interpolate_stack(stack, 2, "linear"))


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def _toy_study(thickness_mm=8.0, lax_offset_mm=0.0):
    """A 32 x 32 x 5 stack of blobs at 2 mm x 10 mm and one LAX view across it (or far away)."""
    ii, jj, kk = np.meshgrid(np.arange(32), np.arange(32), np.arange(5), indexing="ij")
    data = np.exp(-((ii - 16) ** 2 + (jj - 15) ** 2) / (30.0 + 10 * kk)) + 0.1 * np.sin(ii / 3.0)
    sax = Volume(data[..., None].astype(np.float32), np.diag([2.0, 2.0, 10.0, 1.0]),
                 {"source": "toy", "slice_thickness_mm": thickness_mm})
    lax_aff = np.eye(4)
    lax_aff[:3, 0], lax_aff[:3, 1], lax_aff[:3, 2] = [0, 0, 1.0], [0, 1.0, 0], [-6.0, 0, 0]
    lax_aff[:3, 3] = [31.0 + lax_offset_mm, -8.0, -20.0]
    ll, mm = np.meshgrid(np.arange(80), np.arange(80), indexing="ij")
    lax = Volume(np.exp(-((ll - 40) ** 2 + (mm - 40) ** 2) / 200.0)[:, :, None, None].astype(np.float32), lax_aff,
                 {"source": "toy-lax", "slice_thickness_mm": 6.0})
    return Study(sax, {"4ch": lax}, meta={"source": "toy"})


def _toy_grid(study):
    from cardiorecon.autoencoder import prepare_study

    return prepare_study(study, 2.0, 32)


def test_a_lax_view_that_misses_the_stack_is_left_out_with_a_note():
    study = _toy_study(lax_offset_mm=500.0)
    notes: list[str] = []
    with pytest.warns(UserWarning, match="does not cross the SAX stack"):
        model = prepare(study, _toy_grid(study), 2, [0], None, dataclasses_replace(FAST, steps=5, base="linear"),
                        notes=notes)
    assert not any(k.startswith("lax") for k in model.pairs) and any("4ch" in n and "skipped" in n for n in notes)
    crossing = _toy_study()
    model = prepare(crossing, _toy_grid(crossing), 2, [0], None, dataclasses_replace(FAST, steps=5, base="linear"))
    assert model.pairs.get("lax-4ch", 0) > 0


def test_slices_thinner_than_pixels_use_one_pixel_with_a_note():
    study = _toy_study(thickness_mm=0.5)
    notes: list[str] = []
    with pytest.warns(UserWarning, match="thinner than"):
        model = prepare(study, _toy_grid(study), 2, [0], [], dataclasses_replace(FAST, steps=5, base="linear"),
                        notes=notes)
    assert model.sampling.thickness_px == pytest.approx(1.0) and "thinner" in notes[0]


def test_inplane_pairs_cover_both_axes_and_every_slice():
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(30, 26, 4)).astype(np.float32)
    pairs = inplane_pairs(stack, Sampling.of(2.0, 10.0, 8.0, 2), dataclasses_replace(FAST, base="linear"))
    assert pairs.source.count("sax-x") == 2 * 4 and pairs.source.count("sax-y") == 2 * 4
    for b, t, a in zip(pairs.base, pairs.target, pairs.acquired):
        np.testing.assert_allclose(b[a], t[a], atol=1e-6)  # the base keeps the acquired rows


def test_selfsr_is_a_registered_method_in_no_default_list():
    """Issue 26 on the method table: found by name (reconstruct, evaluate, cohort), no weights, guided by
    the LAX views (a held-out view stays out of its training pairs), its options from
    `ReconConfig.method_options`, and in no default method list (measured below register)."""
    from cardiorecon.recon import METHODS, ReconConfig, get_method, method_names
    from cardiorecon.recon.selfsr import SelfSRMethod

    cls = get_method("selfsr")
    assert cls is SelfSRMethod and "selfsr" in method_names() and "selfsr" not in METHODS
    assert cls.weights is None and cls.guided_by_lax and not cls.adaptable and not cls.in_defaults
    assert cls.options_for(ReconConfig()) == SelfSRConfig()
    assert cls.options_for(ReconConfig(method_options={"selfsr": FAST})) is FAST
    with pytest.raises(TypeError, match="SelfSRConfig"):
        cls.options_for(ReconConfig(method_options={"selfsr": {"steps": 5}}))
    from cardiorecon.cohort import CohortOptions
    from cardiorecon.evaluate import Evaluator

    assert Evaluator(["linear", "selfsr"]).weights_needed("selfsr") is None  # evaluate --methods ...,selfsr
    assert CohortOptions(method="selfsr").weights_needed() is None  # cohort --method selfsr
    with pytest.raises(ValueError, match="unknown selfsr base 'cubic'"):
        SelfSRConfig(base="cubic")
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        SelfSRConfig(steps=-1)


def test_selfsr_options_on_the_command_line(tmp_path):
    """`reconstruct --option KEY=VALUE` sets the method's own options, typed by its Options; a bad key or
    value is one line and exit 2 before any work; `methods` lists the options and that selfsr is in no
    default list."""
    from typer.testing import CliRunner

    from cardiorecon.cli import app
    from cardiorecon.cli.app import with_method_options
    from cardiorecon.recon import ReconConfig

    cfg = with_method_options("selfsr", ["steps=5", "base=linear", "use_lax=false", "per_frame=yes", "lr=0.01"],
                              ReconConfig(), "cpu")
    assert cfg.method_options["selfsr"] == SelfSRConfig(steps=5, base="linear", use_lax=False, per_frame=True,
                                                        lr=0.01, device="cpu")
    assert with_method_options("linear", [], ReconConfig(), "cpu") == ReconConfig()  # no device option: unchanged
    runner = CliRunner()
    for option, message in (("base=cubic", "must be one of register, linear"), ("steps=-1", "steps must be"),
                            ("steps=many", "must be an integer"), ("colour=red", "KEY one of base, use_lax, steps"),
                            ("use_lax=maybe", "true or false")):
        res = runner.invoke(app, ["reconstruct", str(tmp_path / "missing"), "--method", "selfsr", "--option", option,
                                  "--out", str(tmp_path / "out")])
        assert res.exit_code == 2 and message in res.output, (option, res.output)
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    listing = res.output.split("\nselfsr ")[1]
    assert "--option base=register, use_lax=True, steps=300" in listing and "in no default method list" in listing


def test_pretrained_network_fine_tunes_from_its_weights_and_a_mismatch_is_refused(tmp_path):
    """Issue 26: pre-training on other subjects (`training.selfsr.pretrain`) writes safetensors + JSON;
    `init` starts the subject's network from them (steps=0: the pre-trained network itself, so its
    output is the saved network's), and weights of another architecture are refused naming the file."""
    import dataclasses

    from cardiorecon.errors import ConfigMismatchError
    from cardiorecon.recon.selfsr import apply, load_srnet
    from cardiorecon.training.selfsr import pretrain

    cfg = dataclasses.replace(FAST, base="linear")
    studies = {"a": (_toy_study(), [0]), "b": (_toy_study(thickness_mm=6.0), [0])}
    path = pretrain(studies, tmp_path / "pre", factor=2, drop=1, config=cfg, steps=40, log=lambda *_: None)
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["pretraining"]["subjects"] == {"a": [0], "b": [0]} and info["pretraining"]["steps"] == 40
    assert info["pretraining"]["samplings"]["b"]["thickness_px"] == pytest.approx(3.0)  # 6 mm on the 2 mm grid
    net = load_srnet(path, cfg)
    assert any(float(p.detach().abs().max()) > 0 for p in net.body[-1].parameters())  # it trained: the last layer moved
    stack = _toy_grid(_toy_study()).image.data[..., 0]
    sampling = Sampling.of(2.0, 10.0, 8.0, 2)
    as_is = fit({0: stack}, sampling, dataclasses.replace(cfg, init=str(path), steps=0))
    base = interpolate_stack(stack, 2, "linear")
    np.testing.assert_allclose(as_is.nets[None](torch.zeros(1, 2, 9, 16)).detach().numpy(),
                               net(torch.zeros(1, 2, 9, 16)).detach().numpy())
    out = as_is.reconstruct(stack)
    expected = apply(net, base, 2)
    expected[:, :, ::2] = stack
    np.testing.assert_allclose(out, expected, atol=1e-6)
    tuned = fit({0: stack}, sampling, dataclasses.replace(cfg, init=str(path), steps=5), notes=(notes := []))
    assert "pre-trained" in notes[-1] and not torch.equal(tuned.nets[None].body[0].weight, net.body[0].weight)
    with pytest.raises(ConfigMismatchError, match="pre.json"):
        fit({0: stack}, sampling, dataclasses.replace(cfg, init=str(path), channels=16))
    with pytest.raises(ConfigMismatchError, match="pre.json"):  # trained on a linear base, asked for register
        load_srnet(path, dataclasses.replace(cfg, base="register"))
