"""DMCVR: the morphology code, its interpolation, the weights pair, and the method in the interface."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cardiorecon.errors import ConfigMismatchError
from cardiorecon.models.config import save_weights
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.dmcvr import DMCVR, check_pair, init_from_diffae
from cardiorecon.models.pretrained import DEFAULT_DMCVR, load_diffae, load_dmcvr
from cardiorecon.models.segnet import SegConfig
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.recon.latent_interp import diffae_codes, interpolate_codes, lerp
from cardiorecon.training.diffae import TrainConfig, train
from cardiorecon.volume import Study
from conftest import micro_config

MICRO_SEG = SegConfig(name="seg_micro", image_size=32, pixel_spacing_mm=4.0, features=(8, 8, 8, 8, 8, 8))
MICRO = micro_config(name="dmcvr_micro", morph_channels=24, morph_level=1)
#: the alternative morphology encoder: the predicted label map through a small trained conv encoder
MICRO_LABELS = dataclasses.replace(MICRO, name="dmcvr_labels_micro", morph_channels=3, morph_source="labels")
FAST = ReconConfig(invert_steps=2, decode_steps=2)


def _perturbed(module, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():  # break the zero inits so that outputs depend on every input
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


@pytest.fixture(scope="module")
def micro():
    return _perturbed(DMCVR(MICRO, MICRO_SEG))


@pytest.fixture(scope="module")
def study():
    params = sample_params(23, "heart-failure", num_frames=4)
    s = generate(params, AcquisitionConfig(), frames=[0, params.es_frame])
    return Study(s.sax, s.lax, None, {}, 0, 1, {"source": "phantom, labels removed"})


def _save(model: DMCVR, folder):
    save_weights(model.diffae, model.config, folder / "model")
    save_weights(model.morphology.segnet, model.seg_config, folder / "segnet")
    return folder


def test_morphology_features_interpolate_to_the_endpoints_exactly():
    a, b = torch.randn(5, 24, 8, 8), torch.randn(5, 24, 8, 8)
    assert torch.equal(lerp(a, b, torch.zeros(5)), a)
    assert torch.equal(lerp(a, b, torch.ones(5)), b)
    z, x, m = torch.randn(3, 4), torch.randn(3, 1, 2, 2), torch.randn(3, 24, 2, 2)
    codes = interpolate_codes(z, x, 4, morph=m)
    assert codes.morph.shape == (6, 24, 2, 2)
    torch.testing.assert_close(codes.morph[1], 0.5 * (m[0] + m[1]))  # gap 0, alpha = 2/4
    torch.testing.assert_close(codes.morph[3], 0.75 * m[1] + 0.25 * m[2])  # gap 1, alpha = 1/4


def test_dmcvr_runs_without_labels_from_predicted_segmentations(study, micro):
    assert study.sax_labels is None
    rec = reconstruct(study, "dmcvr", factor=2, frames="ed", model=micro, config=FAST)
    dense, acquired = rec.normalised.data[..., 0], rec.grid.image.data[..., 0]
    np.testing.assert_array_equal(dense[:, :, ::2], acquired)
    assert np.isfinite(dense).all()
    _, codes = diffae_codes(micro, acquired, 2, 2, depth=FAST.depth)
    assert codes.morph is not None and codes.morph.shape[1] == MICRO.morph_channels
    # the morphology changes what is decoded: same z_sem and x_T, other morphology -> other slices
    from cardiorecon.autoencoder import decode

    a = decode(micro, codes.z_sem, codes.x_T, 2, depth=FAST.depth, morph=codes.morph)
    b = decode(micro, codes.z_sem, codes.x_T, 2, depth=FAST.depth, morph=codes.morph.flip(0))
    assert (a - b).abs().max() > 1e-4


def test_label_map_morphology_encoder(study, tmp_path):
    model = _perturbed(DMCVR(MICRO_LABELS, MICRO_SEG), seed=2)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    m = model.morphology(x)
    assert m.shape == (2, 3, 32, 32)  # LV cavity, myocardium, RV cavity probabilities at full resolution
    probs = torch.softmax(model.morphology.segnet(x), dim=1)
    torch.testing.assert_close(m, probs[:, 1:4])
    # the small label-map encoder is part of the decoder: trained (and EMA'd) with it
    assert any(k.startswith("decoder.extra.") and v.requires_grad for k, v in model.diffae.named_parameters())
    rec = reconstruct(study, "dmcvr", factor=2, frames="ed", model=model, config=FAST)
    dense, acquired = rec.normalised.data[..., 0], rec.grid.image.data[..., 0]
    np.testing.assert_array_equal(dense[:, :, ::2], acquired)
    assert np.isfinite(dense).all()
    folder = _save(model, tmp_path / "labels")
    assert load_dmcvr(folder).config == MICRO_LABELS
    with pytest.raises(ConfigMismatchError, match="morphology channels"):
        check_pair(dataclasses.replace(MICRO_LABELS, morph_channels=24), MICRO_SEG)
    with pytest.raises(ConfigMismatchError, match="morph_source"):
        check_pair(dataclasses.replace(MICRO, morph_source="contours"), MICRO_SEG)
    # initialised from a plain DiffAE like the features variant: only the widened block is padded
    padded = init_from_diffae(DiffAE(MICRO_LABELS), DiffAE(dataclasses.replace(MICRO, morph_channels=0)))
    assert padded and all(k.startswith("decoder.down.") for k in padded)


def test_window_segmenter_morphology_on_the_prior_grid(study, tmp_path):
    """Issue 28: the morphology of a whole-field (window) segmentation network, which works at its own
    pixel spacing: each slice resampled to it and the probabilities brought back to the prior's grid.
    A slice resampled for a window network at the prior's own spacing gives the network's own output."""
    window = SegConfig(name="seg_window_micro", image_size=32, pixel_spacing_mm=2.0, features=(8, 8, 8, 8, 8, 8),
                       inference="window")
    model = _perturbed(DMCVR(MICRO_LABELS, window), seed=3)  # prior 32 px of 4 mm, window network at 2 mm
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    m = model.morphology(x)
    assert m.shape == (2, 3, 32, 32) and torch.isfinite(m).all()
    assert float(m.min()) >= 0 and float(m.sum(1).max()) <= 1 + 1e-5
    # where both grids are the same the resampling is the identity: the network's own probabilities
    from cardiorecon.models.dmcvr import MorphologyEncoder

    same = MorphologyEncoder(model.morphology.segnet, 1, "labels", grid_spacing_mm=2.0)
    torch.testing.assert_close(same(x), torch.softmax(model.morphology.segnet(x), dim=1)[:, 1:4])
    # at 4 mm the network sees a 64 px slice: its output differs from the one on the 32 px slice
    assert (m - same(x)).abs().max() > 1e-4
    # only label maps come from a window network, and it needs the prior's pixel spacing
    with pytest.raises(ConfigMismatchError, match="only label maps"):
        check_pair(MICRO, window)
    with pytest.raises(ConfigMismatchError, match="label maps"):
        MorphologyEncoder(model.morphology.segnet, 1, "labels")
    # saved and loaded as a pair; reconstructs with the acquired slices unchanged
    folder = _save(model, tmp_path / "window")
    loaded = load_dmcvr(folder)
    torch.testing.assert_close(loaded.morphology(x), m)
    rec = reconstruct(study, "dmcvr", factor=2, frames="ed", model=loaded, config=FAST)
    np.testing.assert_array_equal(rec.normalised.data[:, :, ::2, 0], rec.grid.image.data[..., 0])


def test_method_and_weights_must_match(study, micro):
    plain = DiffAE(dataclasses.replace(MICRO, morph_channels=0))
    with pytest.raises(ValueError, match="DMCVR weights"):
        reconstruct(study, "dmcvr", factor=2, frames="ed", model=plain, config=FAST)
    with pytest.raises(ValueError, match="plain DiffAE"):
        reconstruct(study, "diffae", factor=2, frames="ed", model=micro, config=FAST)


def test_lag_starts_from_the_dmcvr_codes(study, micro):
    from cardiorecon.recon.lag import LagConfig

    lag = LagConfig(max_iterations=3, ddim_steps=2, invert_steps=2, depth=0.4)
    cfg = dataclasses.replace(FAST, lag=lag, lag_init="dmcvr")
    assert study.lax
    rec = reconstruct(study, "lag", factor=2, frames="ed", model=micro, config=cfg)
    assert any("dmcvr codes" in n for n in rec.notes)
    dense, acquired = rec.normalised.data[..., 0], rec.grid.image.data[..., 0]
    np.testing.assert_array_equal(dense[:, :, ::2], acquired)
    assert np.isfinite(dense).all()
    res = rec.lag[study.ed_frame]
    assert res.iterations >= 1 and set(res.agreement_after) == set(rec.lax_views)
    # the start is the option's, not the model's: DMCVR weights with the default start are refused
    with pytest.raises(ValueError, match="method 'lag' needs plain DiffAE weights"):
        reconstruct(study, "lag", factor=2, frames="ed", model=micro, config=dataclasses.replace(cfg, lag_init="diffae"))


def test_weights_round_trip_and_mismatched_pairs_are_refused(micro, tmp_path):
    folder = _save(micro, tmp_path / "ok")
    loaded = load_dmcvr(folder)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.morphology(x), micro.morphology(x))
    with pytest.raises(ConfigMismatchError, match="DMCVR weights"):
        load_diffae(folder)
    # a segmentation network whose features do not fit the decoder's morphology input
    other_seg = SegConfig(name="seg_other", image_size=32, pixel_spacing_mm=4.0, features=(8, 16, 16, 8, 8, 8))
    with pytest.raises(ConfigMismatchError, match="morphology channels"):
        check_pair(MICRO, other_seg)
    bad = _save(micro, tmp_path / "bad_seg")
    from cardiorecon.models.segnet import SegNet

    save_weights(SegNet(other_seg), other_seg, bad / "segnet")
    with pytest.raises(ConfigMismatchError):
        load_dmcvr(bad)
    # a config JSON edited away from the weights
    edited = _save(micro, tmp_path / "edited")
    meta = json.loads((edited / "model.json").read_text())
    meta["config"]["z_dim"] = 32
    (edited / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigMismatchError):
        load_dmcvr(edited)
    # plain DiffAE weights are not DMCVR weights
    plain_cfg = dataclasses.replace(MICRO, morph_channels=0)
    save_weights(DiffAE(plain_cfg), plain_cfg, tmp_path / "plain" / "model")
    with pytest.raises(ConfigMismatchError, match="not DMCVR"):
        load_dmcvr(tmp_path / "plain")


def test_initialisation_from_a_plain_diffae_zeroes_the_new_inputs():
    plain = _perturbed(DiffAE(dataclasses.replace(MICRO, morph_channels=0, name="micro")), seed=1)
    model = DiffAE(MICRO)
    padded = init_from_diffae(model, plain)
    assert padded and all(k.startswith("decoder.down.") for k in padded)
    own, src = model.state_dict(), plain.state_dict()
    for k in padded:
        if own[k].ndim > 1:
            n = src[k].shape[1]
            torch.testing.assert_close(own[k][:, :n], src[k])
            assert own[k][:, n:].abs().max() == 0
    same = [k for k in src if k not in padded]
    assert all(torch.equal(own[k], src[k]) for k in same)
    with pytest.raises(ConfigMismatchError):
        init_from_diffae(model, DiffAE(dataclasses.replace(MICRO, morph_channels=0, z_dim=8)))


def test_dmcvr_training_writes_weights_that_load(tmp_path):
    root = tmp_path / "data"
    acq = AcquisitionConfig(sax_matrix=48, lax_matrix=32, sax_spacing_mm=4.0)
    write_subject(generate(sample_params(3, "healthy", num_frames=4), acq, truth=False), root / "s3")
    seg = tmp_path / "seg" / "model"
    from cardiorecon.models.segnet import SegNet

    save_weights(_perturbed(SegNet(MICRO_SEG)), MICRO_SEG, seg)
    cfg = TrainConfig(batch_size=2, max_steps=2, checkpoint_every=2, figure_every=1000, precision="32-true")
    run = train(MICRO, [root], tmp_path / "run", cfg, seg_weights=seg)
    model = load_dmcvr(run)
    assert model.config == MICRO and model.seg_config == MICRO_SEG


@pytest.mark.skipif(not (DEFAULT_DMCVR / "model.safetensors").is_file(), reason="DMCVR weights not shipped")
def test_shipped_dmcvr_decodes_an_acquired_slice_from_its_own_codes():
    from cardiorecon.autoencoder import decode, encode, prepare_study, psnr
    from cardiorecon.preprocess import HeartRegion

    model = load_dmcvr()
    params = sample_params(31, "heart-failure", num_frames=4)
    s = generate(params, AcquisitionConfig(), frames=[0])
    # One frame and no LAX view: the heart region would be the whole field of view; the measured bound
    # below is for the model's own 64 px (128 mm) crop at the image centre.
    region = HeartRegion(s.sax.center_world, 128.0, "image centre")
    grid = prepare_study(Study(s.sax, {}, None, {}, 0, None, {}), model.config.pixel_spacing_mm,
                         model.config.image_size, region=region)
    x0 = torch.from_numpy(np.moveaxis(grid.image.data[..., 0], 2, 0)[:, None].copy()).float()
    morph = model.morphology(x0)
    z, x_T = encode(model, x0, 8, depth=0.4, morph=morph)
    rec = decode(model, z, x_T, 8, depth=0.4, morph=morph)
    assert psnr(rec, x0).mean().item() > PSNR_BOUND_DB


#: the shipped DMCVR's own-code decoding (inversion to 0.4 T in 8 steps, 8 decode steps, the codes
#: `dmcvr` uses) of the 13 slices of this new phantom's frame 0: measured 32.55 dB (dmcvr_labels_tiny);
#: the bound leaves 2.5 dB for other CPUs' arithmetic.
PSNR_BOUND_DB = 30.0


@pytest.mark.parametrize("source", ["features", "labels"])
def test_a_split_norm_initialisation_reproduces_the_plain_diffae_whatever_the_morphology(source):
    plain = _perturbed(DiffAE(dataclasses.replace(MICRO, morph_channels=0, name="micro")), seed=2)
    cfg = MICRO if source == "features" else MICRO_LABELS
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn((3, 1, 32, 32), generator=g), torch.tensor([10, 400, 900])
    z = torch.randn((3, cfg.z_dim), generator=g)
    morph_shape = (3, cfg.morph_channels) + ((16, 16) if source == "features" else (32, 32))
    with torch.no_grad():
        want = plain.eps(x_t, t, z)
        split = DiffAE(dataclasses.replace(cfg, morph_norm="split")).eval()
        init_from_diffae(split, plain)
        for morph in (torch.zeros(morph_shape), torch.randn(morph_shape, generator=g)):
            torch.testing.assert_close(split.eps(x_t, t, (z, morph)), want, rtol=0, atol=1e-5)
        # the joint norm (the shipped weights' form) regroups the old channels: not exact, and it says so
        joint = DiffAE(cfg).eval()
        with pytest.warns(UserWarning, match="regroups the old channels"):
            init_from_diffae(joint, plain)
        assert (joint.eps(x_t, t, (z, torch.zeros(morph_shape))) - want).abs().max() > 1e-3


def test_the_shipped_real_dmcvr_loads_with_the_window_segmenter():
    """weights/dmcvr_real (issue 28): the decoder and its copy of segnet_real load as a pair; its morphology comes
    from the window network at 1.5 mm, resampled from the 2 mm grid."""
    from pathlib import Path

    folder = Path(DEFAULT_DMCVR).parent / "dmcvr_real"
    model = load_dmcvr(folder)
    assert model.seg_config.inference == "window" and model.config.morph_source == "labels"
    assert model.morphology.scale == pytest.approx(2.0 / 1.5)
    x = torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64)
    m = model.morphology(x)
    assert m.shape == (1, 3, 64, 64) and float(m.sum(1).max()) <= 1 + 1e-5
    assert (folder / "MODEL_CARD.md").read_text().count("ACDC hold-out") >= 1
