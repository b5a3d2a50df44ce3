"""lag over a cine (issue 17, 4D reuse): a frame whose previous cine frame was optimised starts from
that frame's codes ('previous') or from its own seeds plus that frame's correction ('delta').

With one iteration per warm frame the kept codes are the start codes themselves (iteration 0 is the
best so far when the next step is never evaluated), so the tests see exactly where each frame started."""

import dataclasses

import numpy as np
import pytest
import torch

from cardiorecon.phantom import AcquisitionConfig, generate, sample_params
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.recon.lag import LagConfig, optimise
from cardiorecon.recon.latent_interp import GapCodes
from cardiorecon.volume import Study
from conftest import micro_config, micro_diffae

MICRO = micro_config(image_size=16, pixel_spacing_mm=8.0)
LAG = LagConfig(ddim_steps=1, invert_steps=2, depth=0.4, max_iterations=2, patience=5, lr=2e-2, checkpoint=False)
CFG = ReconConfig(invert_steps=2, decode_steps=2, lag=LAG)


@pytest.fixture(scope="module")
def cine():
    """Three consecutive frames of a 4-frame phantom cine, read as a 3-frame study."""
    params = sample_params(33, "healthy", num_frames=4)
    s = generate(params, AcquisitionConfig(), frames=[0, 1, 2], truth=False)
    return Study(s.sax, s.lax, s.sax_labels, s.lax_labels, 0, 1, {"source": "phantom"})


@pytest.fixture(scope="module")
def micro():
    return micro_diffae(MICRO)


def _run(study, model, warm, iterations=1, frames="all"):
    torch.manual_seed(1)
    cfg = dataclasses.replace(CFG, lag_warm=warm, lag_warm_iterations=iterations)
    return reconstruct(study, "lag", factor=3, frames=frames, model=model, config=cfg, align="off")


def test_previous_warm_start_starts_each_frame_from_the_previous_codes(cine, micro):
    rec = _run(cine, micro, "previous")
    assert rec.lag[0].warm is None and rec.lag[0].iterations == LAG.max_iterations
    for t in (1, 2):
        r, prev = rec.lag[t], rec.lag[t - 1]
        assert r.warm == f"previous from frame {t - 1}"
        assert r.iterations == 1  # lag_warm_iterations
        torch.testing.assert_close(r.codes[0], prev.codes[0])
        torch.testing.assert_close(r.codes[1], prev.codes[1])
        assert not torch.allclose(r.codes[1], r.seeds[1])  # a real start elsewhere than the own seeds
    assert np.isfinite(rec.normalised.data).all()


def test_delta_warm_start_carries_the_previous_correction(cine, micro):
    rec = _run(cine, micro, "delta", frames=[0, 1])
    r, prev = rec.lag[1], rec.lag[0]
    assert r.warm == "delta from frame 0"
    for k in (0, 1):
        torch.testing.assert_close(r.codes[k], r.seeds[k] + (prev.codes[k] - prev.seeds[k]))
    assert not torch.allclose(r.codes[1], r.seeds[1])  # frame 0 moved its codes: a real correction
    assert np.isfinite(rec.normalised.data).all()


def test_non_adjacent_frames_start_from_their_seeds(cine, micro):
    gap = _run(cine, micro, "previous", frames=[0, 2])  # 2 does not follow 0 in a 3-frame cine
    assert all(r.warm is None and r.iterations == LAG.max_iterations for r in gap.lag.values())
    assert np.isfinite(gap.normalised.data).all()


def test_bad_warm_start_settings_are_refused(cine, micro):
    with pytest.raises(ValueError, match="warm start"):
        _run(cine, micro, "sideways")
    codes = GapCodes(z_sem=torch.zeros((2, 4)), x_T=torch.zeros((2, 1, 8, 8)), left=np.array([0, 1]),
                     alpha=np.array([0.5, 0.5]), out_index=np.array([1, 3]))
    with pytest.raises(ValueError, match="x_T has shape"):
        optimise(micro, torch.zeros((8, 8, 3)), codes, 2, {}, {}, LAG, init=(torch.zeros((2, 4)), torch.zeros((3, 1, 8, 8))))


def test_cli_refuses_a_bad_or_misplaced_lag_warm(tmp_path):
    from typer.testing import CliRunner

    from cardiorecon.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["cohort", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "lag",
                              "--lag-warm", "sideways"])
    assert res.exit_code == 2 and "--lag-warm must be one of off, previous, delta" in res.output
    res = runner.invoke(app, ["reconstruct", str(tmp_path), "--out", str(tmp_path / "r"), "--method", "linear",
                              "--lag-warm", "delta"])
    assert res.exit_code == 2 and "applies to --method lag" in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_cohort_marker_key_carries_lag_warm_for_lag_only():
    from cardiorecon.cohort import CohortOptions

    assert "lag_warm" not in CohortOptions(method="linear", lag_warm="delta").key()
    assert CohortOptions(method="lag", lag_warm="delta").key()["lag_warm"] == "delta"
    assert CohortOptions(method="lag").key() != CohortOptions(method="lag", lag_warm="delta").key()
