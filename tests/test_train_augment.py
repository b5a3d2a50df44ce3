"""The diffusion training transforms (DiffAE and DMCVR share `DiffAEModule.batch`) never mirror the
anatomy: a left-right or up-down flip would put the RV on the wrong side of the septum."""

import numpy as np
import pytest
import torch

from cardiorecon.training.data import augment_pair, training_theta
from cardiorecon.training.diffae import DiffAEModule, TrainConfig
from conftest import micro_config

MICRO = micro_config(pixel_spacing_mm=3.0, attention_levels=(1,))


def _marked_bank(n: int = 8, size: int = 32) -> np.ndarray:
    """Dark images with one bright square in the first-axis-low, second-axis-low quadrant."""
    bank = -np.ones((n, size, size), np.float16)
    bank[:, 4:12, 6:13] = 1.0
    return bank


def test_training_batches_never_flip():
    module = DiffAEModule(MICRO, TrainConfig(batch_size=16), _marked_bank())
    half = MICRO.image_size / 2
    ii, jj = np.meshgrid(np.arange(MICRO.image_size), np.arange(MICRO.image_size), indexing="ij")
    for step in range(40):  # 640 augmented images: with any flip probability > 1 % one would flip
        x, _ = module.batch(step)
        w = (x[:, 0].numpy() + 1).clip(0)  # bright = heavy
        ci = (w * ii).sum((1, 2)) / w.sum((1, 2))
        cj = (w * jj).sum((1, 2)) / w.sum((1, 2))
        assert (ci < half).all() and (cj < half).all(), f"step {step}: a mirrored image in the batch"


def test_training_transforms_are_proper_rotations():
    g = torch.Generator().manual_seed(0)
    theta = training_theta(4096, g, max_rotation_deg=10.0, max_shift_px=3.0, size=64)
    det = torch.linalg.det(theta[:, :, :2])
    assert torch.allclose(det, torch.ones_like(det), atol=1e-5)
    assert theta[:, :, 2].abs().max() <= 2 * 3.0 / 64 + 1e-6  # shifts within 3 px
    assert not hasattr(TrainConfig(), "flip_prob")


def test_a_flip_is_refused():
    x, y = torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="mirror"):
        augment_pair(x, y, torch.Generator().manual_seed(0), 10.0, 0.25)


def _disk(size: int = 64, radius: float = 16.0) -> torch.Tensor:
    ii, jj = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2, indexing="ij")
    return torch.from_numpy(np.where(ii ** 2 + jj ** 2 <= radius ** 2, 1.0, -1.0).astype(np.float32))[None, None]


def test_zoom_magnifies_by_its_factor_and_is_off_by_default():
    from cardiorecon.training.data import augment

    x = _disk().repeat(2, 1, 1, 1)
    plain = augment(x, torch.Generator().manual_seed(1), 0.0, gamma_range=(1.0, 1.0))
    zoomed = augment(x, torch.Generator().manual_seed(1), 0.0, gamma_range=(1.0, 1.0), scale_range=(1.5, 1.5))
    area = lambda t: float((t[0, 0] > 0).sum())  # noqa: E731
    assert area(zoomed) / area(plain) == pytest.approx(1.5 ** 2, rel=0.05)  # > 1 magnifies the heart
    shrunk = augment(x, torch.Generator().manual_seed(1), 0.0, gamma_range=(1.0, 1.0), scale_range=(0.8, 0.8))
    assert area(shrunk) / area(plain) == pytest.approx(0.8 ** 2, rel=0.05)
    # off (the default): the same random stream as before the zoom existed
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    augment(x, g1)
    augment(x, g2, scale_range=(1.0, 1.0), bias_field=0.0)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_bias_field_is_smooth_bounded_and_varies():
    from cardiorecon.training.data import augment

    x = torch.zeros(8, 1, 64, 64)  # mid-grey
    out = augment(x, torch.Generator().manual_seed(0), 0.0, gamma_range=(1.0, 1.0), bias_field=0.4)
    assert out.abs().max() <= 1.0
    spread = out.amax((1, 2, 3)) - out.amin((1, 2, 3))
    assert (spread > 0.05).all()  # a field, not a constant
    step = (out[..., 1:, :] - out[..., :-1, :]).abs().max()
    assert step < 0.05  # smooth: no pixel-to-pixel jumps
    # log amplitude within the bound: intensity u = 0.5 scaled by exp(+-0.4 * (1 + 1 + 1 + 2/3 + 2/3) / 2) at most
    u = (out + 1) / 2
    assert (u / 0.5).max() <= np.exp(0.4 * (3 + 4 / 3) / 2) + 1e-4
