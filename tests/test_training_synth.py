"""Appearance-randomised phantom images for DiffAE training (training.synth.synthetic_bank) and
prepared slice banks (.npy) as training data paths (training.data.build_bank)."""

import numpy as np
import pytest
import torch

from cardiorecon.errors import InputError
from cardiorecon.training.data import build_bank
from cardiorecon.training.synth import diffusion_synth_config, render_tissue_stack, synthetic_bank


@pytest.fixture(scope="module")
def stacks():
    torch.set_num_threads(1)
    cfg = diffusion_synth_config(4.0, 32)
    return [render_tissue_stack(3, "healthy", cfg, num_frames=1)[0]], cfg


def test_synthetic_bank_images(stacks):
    st, cfg = stacks
    assert cfg.patch_size == 32 and cfg.spacing_mm == 4.0 and cfg.heart_centred == 1.0
    a = synthetic_bank(st, 12, cfg, seed=0)
    assert a.shape == (12, 32, 32) and a.dtype == np.float16
    assert a.min() >= -1 and a.max() <= 1
    np.testing.assert_array_equal(a, synthetic_bank(st, 12, cfg, seed=0))  # a pure function of the seed
    assert not np.array_equal(a, synthetic_bank(st, 12, cfg, seed=1))
    # random appearance: the images' mean intensities spread (no two share one look)
    assert np.std(a.astype(np.float32).mean(axis=(1, 2))) > 0.05


def test_a_prepared_bank_is_a_data_path(tmp_path, stacks):
    st, cfg = stacks
    path = tmp_path / "synth.npy"
    np.save(path, synthetic_bank(st, 5, cfg))
    bank = build_bank([path, path], 4.0, 32, cache=tmp_path / "cache" / "train.npy", progress=False)
    assert bank.shape == (10, 32, 32)  # a path given twice is drawn from twice
    np.testing.assert_array_equal(bank[:5], np.load(path))
    with pytest.raises(InputError, match="must be"):
        build_bank([path], 4.0, 64, progress=False)  # another model size
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 32, 32), 3.0, np.float32))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        build_bank([bad], 4.0, 32, progress=False)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(InputError, match="not a readable"):
        build_bank([tmp_path / "junk.npy"], 4.0, 32, progress=False)
