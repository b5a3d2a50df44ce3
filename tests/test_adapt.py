"""Patient adaptation (recon/adapt.py): only a copy of the model changes, the study's own diffusion
loss falls, and studies of one frame (and DMCVR models, and working grids larger than the model's
size) adapt without error through the reconstruction interface."""

import dataclasses

import numpy as np
import pytest
import torch

from cardiorecon.models.config import DiffAEConfig
from cardiorecon.models.diffae import DiffAE
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.recon.adapt import AdaptConfig, adapt, denoising_loss, study_slices, trainable_parameters
from cardiorecon.volume import Study
from conftest import micro_config

MICRO = micro_config(attention_levels=(1,))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _perturbed(module, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():  # break the zero inits so that every layer matters
        for p in module.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return module.eval()


@pytest.fixture(scope="module")
def study():
    params = sample_params(31, "healthy", num_frames=4)
    s = generate(params, AcquisitionConfig(), frames=[0, params.es_frame])
    return Study(s.sax, s.lax, None, {}, 0, 1, {"source": "phantom, labels removed"})


@pytest.fixture(scope="module")
def slices(study):
    from cardiorecon.autoencoder import prepare_study

    grid = prepare_study(study, MICRO.pixel_spacing_mm, MICRO.image_size)
    return study_slices(grid.image.data)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layers", ["tail", "tail+encoder", "decoder"])
def test_only_a_copy_changes_and_only_the_chosen_layers(slices, layers):
    model = _perturbed(DiffAE(MICRO))
    before, flags = _state(model), [p.requires_grad for p in model.parameters()]
    res = adapt(model, slices, 5, AdaptConfig(layers=layers, lr=1e-3))
    for k, v in model.state_dict().items():  # the caller's (shipped) model is untouched
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert res.model is not model
    chosen = {id(p) for p in trainable_parameters(res.model, layers)}
    names = dict(res.model.named_parameters())
    changed = {n for n, p in names.items() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert all(id(names[n]) in chosen for n in changed), "a frozen layer changed"
    assert res.trainable == sum(p.numel() for p in trainable_parameters(res.model, layers))
    assert all(not p.requires_grad for p in res.model.parameters()) and not res.model.training
    assert len(res.losses) == 5 and res.num_slices == len(slices)


def test_the_studys_own_denoising_loss_falls(slices):
    model = _perturbed(DiffAE(MICRO))
    before = denoising_loss(model, slices, n=48)
    res = adapt(model, slices, 40, AdaptConfig(lr=2e-3, batch_size=8))
    after = denoising_loss(res.model, slices, n=48)
    assert after < 0.8 * before, (before, after)
    assert denoising_loss(model, slices, n=48) == pytest.approx(before)  # the original still scores the same


def test_a_one_frame_study_adapts_and_reconstructs(study):
    one = dataclasses.replace(study, sax=study.sax.with_data(study.sax.data[..., :1]), es_frame=None)
    assert one.num_frames == 1
    model = _perturbed(DiffAE(MICRO))
    before = _state(model)
    cfg = ReconConfig(invert_steps=2, decode_steps=2, adapt=3)
    rec = reconstruct(one, "diffae", factor=2, frames=[0], model=model, config=cfg)
    assert any("adapted a copy" in n for n in rec.notes)
    assert np.isfinite(rec.normalised.data).all()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # without adaptation the acquired slices are the same and the new ones differ (the copy was used)
    plain = reconstruct(one, "diffae", factor=2, frames=[0], model=model, config=dataclasses.replace(cfg, adapt=0))
    np.testing.assert_array_equal(rec.normalised.data[:, :, ::2], plain.normalised.data[:, :, ::2])
    assert not np.array_equal(rec.normalised.data[:, :, 1::2], plain.normalised.data[:, :, 1::2])


def test_a_grid_larger_than_the_model_is_cropped_for_adaptation():
    model = _perturbed(DiffAE(MICRO))
    big = torch.rand(6, 1, 48, 48) * 2 - 1  # a working grid of 48 px for a 32 px model
    res = adapt(model, big, 3)
    assert len(res.losses) == 3 and np.isfinite(res.losses).all()


def test_dmcvr_adapts_its_decoder_copy_only(slices):
    from cardiorecon.models.dmcvr import DMCVR
    from cardiorecon.models.segnet import SegConfig

    seg = SegConfig(name="seg_micro", image_size=32, pixel_spacing_mm=4.0, features=(8, 8, 8, 8, 8, 8))
    cfg = DiffAEConfig(name="dmcvr_labels_micro", image_size=32, pixel_spacing_mm=4.0, base_channels=8,
                       channel_mult=(1, 2), attention_levels=(), encoder_channels=8, z_dim=16, morph_channels=3,
                       morph_level=1, morph_source="labels")
    model = _perturbed(DMCVR(cfg, seg))
    before = _state(model)
    res = adapt(model, slices, 3)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    seg_after = res.model.morphology.segnet.state_dict()
    assert all(torch.equal(v, before["morphology.segnet." + k]) for k, v in seg_after.items())  # segmenter frozen


def test_cli_reconstruct_adapt(tmp_path):
    """`--adapt STEPS` reaches the pipeline: the note says a copy was adapted; the shipped weights
    file is unchanged."""
    from typer.testing import CliRunner

    from cardiorecon.cli import app
    from cardiorecon.models.pretrained import DEFAULT_DIFFAE
    from cardiorecon.phantom import write_subject

    params = sample_params(5, "healthy", num_frames=4)
    write_subject(generate(params, AcquisitionConfig(), truth=False), tmp_path / "s")
    shipped = (DEFAULT_DIFFAE / "model.safetensors").read_bytes()
    res = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "s"), "--method", "diffae", "--factor", "2",
                                   "--frames", "0", "--align", "off", "--no-native", "--invert-steps", "2",
                                   "--decode-steps", "2", "--adapt", "2", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "adapted a copy of the model to this study: 2 steps" in res.output
    assert (DEFAULT_DIFFAE / "model.safetensors").read_bytes() == shipped
    res = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "s"), "--method", "diffae", "--adapt", "-1",
                                   "--out", str(tmp_path / "out2")])
    assert res.exit_code == 2
