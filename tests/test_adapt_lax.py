"""Patient adaptation on the LAX views (recon/adapt.py `lax_slices`): the views the method is given
are resampled onto the model grid and adapted on with the SAX slices; a held-out view never is."""

import numpy as np
import pytest
import torch

from cardiorecon.models.diffae import DiffAE
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.recon import adapt as adapt_module
from cardiorecon.recon.adapt import lax_slices
from cardiorecon.volume import Study, Volume
from conftest import micro_config

MICRO = micro_config(attention_levels=(1,))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def phantom():
    params = sample_params(32, "healthy", num_frames=4)
    return generate(params, AcquisitionConfig(), frames=[0, params.es_frame], truth=False)


@pytest.fixture(scope="module")
def study(phantom):
    return Study(phantom.sax, phantom.lax, None, {}, 0, 1, {"source": "phantom, labels removed"})


def _model():
    torch.manual_seed(0)
    m = DiffAE(MICRO)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m.eval()


def test_lax_slices_are_the_given_views_on_the_model_grid(study):
    from cardiorecon.autoencoder import prepare_study

    grid = prepare_study(study, MICRO.pixel_spacing_mm, MICRO.image_size)
    S = grid.image.spatial_shape[0]
    x = lax_slices(study.lax, MICRO.pixel_spacing_mm, S, grid.centre)
    assert x.shape == (sum(v.num_frames for v in study.lax.values()), 1, S, S)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2  # images, not an empty square
    one = sorted(study.lax)[0]
    y = lax_slices({one: study.lax[one]}, MICRO.pixel_spacing_mm, S, grid.centre)
    assert len(y) == study.lax[one].num_frames
    # the square is centred on the grid centre projected on the plane: the heart, not the image corner,
    # so the frames differ (the heart moves) where a square of background would not
    assert (y[0] - y[-1]).abs().mean() > 0.01
    # a view whose plane does not reach the heart region adds nothing
    v = study.lax[one]
    far = np.array(v.affine, float)
    far[:3, 3] += 2000.0 * far[:3, 0] / np.linalg.norm(far[:3, 0])
    assert len(lax_slices({"far": Volume(v.data, far, v.meta)}, MICRO.pixel_spacing_mm, S, grid.centre)) == 0


def _record(monkeypatch, decode=True):
    """Record the views each adaptation is given; decode=False: the reconstruction after the
    adaptation is linear interpolation (fast; what is tested is what adaptation sees)."""
    calls: list[list[str]] = []
    if not decode:
        from cardiorecon.recon import latent_interp
        from cardiorecon.recon.interpolate import interpolate_stack

        monkeypatch.setattr(latent_interp, "reconstruct_diffae",
                            lambda model, stack, f, *a, **k: (interpolate_stack(stack, f, "linear"),))
    real = adapt_module.lax_slices

    def spy(views, *args, **kwargs):
        calls.append(sorted(views))
        return real(views, *args, **kwargs)

    monkeypatch.setattr(adapt_module, "lax_slices", spy)
    return calls


def test_reconstruct_adapts_on_the_given_views_only(study, monkeypatch):
    calls = _record(monkeypatch, decode=False)
    views = sorted(study.lax)
    cfg = ReconConfig(invert_steps=2, decode_steps=2, adapt=2)
    rec = reconstruct(study, "diffae", factor=2, frames=[0], lax_views=views[:1], model=_model(), config=cfg)
    assert calls == [views[:1]]
    n = study.lax[views[0]].num_frames
    assert any(f"and {n} LAX images" in note for note in rec.notes), rec.notes
    reconstruct(study, "diffae", factor=2, frames=[0], model=_model(), config=cfg)  # None: every view
    assert calls[-1] == views


def test_lax_holdout_never_adapts_on_the_held_out_view(phantom, tmp_path, monkeypatch):
    from cardiorecon.evaluate import Evaluator, lax_holdout_protocol
    from cardiorecon.phantom import write_subject

    write_subject(phantom, tmp_path / "s")
    calls = _record(monkeypatch, decode=False)
    ev = Evaluator(["diffae"], model=_model(), config=ReconConfig(invert_steps=2, decode_steps=2, adapt=1),
                   progress=False, echo=lambda _m: None)
    rows = lax_holdout_protocol(ev, [tmp_path / "s"], frames="0", factor=2)
    held = sorted({r["structure"].removeprefix("lax_") for r in rows if r["structure"].startswith("lax_")})
    views = sorted(phantom.lax)
    assert held == views and len(views) >= 2
    assert len(calls) == len(views)  # one adapted copy per held-out view, each on the other views only
    assert sorted(next(v for v in views if v not in seen) for seen in calls) == views
    assert all(len(seen) == len(views) - 1 for seen in calls)
