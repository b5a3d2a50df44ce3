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
