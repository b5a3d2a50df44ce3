import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cardiorecon.errors import ConfigMismatchError
from cardiorecon.models.config import DiffAEConfig, load_weights, save_weights
from cardiorecon.models.diffae import DiffAE
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject
from cardiorecon.training.diffae import TrainConfig, train
from conftest import micro_config

MICRO = micro_config(pixel_spacing_mm=3.0, attention_levels=(1,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    acq = AcquisitionConfig(sax_matrix=64, lax_matrix=48, sax_spacing_mm=3.0)
    for seed in (1, 2):
        write_subject(generate(sample_params(seed, "healthy", num_frames=4), acq, truth=False), root / f"s{seed}")
    return root


def _train(data, out, steps, **kw):
    cfg = TrainConfig(batch_size=4, max_steps=steps, checkpoint_every=3, figure_every=1000, precision="32-true",
                      lr=1e-3, figure_invert_steps=3, figure_decode_steps=3, **kw)
    return train(MICRO, [data], out, cfg)


def test_training_loss_goes_down(data, tmp_path):
    run = _train(data, tmp_path / "run", 20)
    rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert len(rows) >= 1
    assert (run / "weights" / "ema.safetensors").is_file() and (run / "weights" / "ema.json").is_file()
    assert (run / "figures" / "step_0000020.png").is_file()
    # The loss over the last steps is below that of the first steps (same seeds, fixed data).
    from cardiorecon.training.diffae import DiffAEModule
    from cardiorecon.diffusion import NoiseSchedule
    bank = np.load(run / "data" / "train.npy")
    fresh = DiffAEModule(MICRO, TrainConfig(batch_size=32), bank)
    trained = DiffAEModule(MICRO, TrainConfig(batch_size=32), bank)
    load_weights(trained.model, MICRO, run / "weights" / "ema")
    sched = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(5)
    x0 = torch.from_numpy(bank[:32].astype(np.float32)).unsqueeze(1)
    t = torch.randint(0, 1000, (32,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = sched.add_noise(x0, eps, t)
    with torch.no_grad():
        losses = [torch.mean((m.model(x_t, t, x0) - eps) ** 2).item() for m in (fresh, trained)]
    assert losses[1] < 0.8 * losses[0]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    straight = _train(data, tmp_path / "straight", 6)
    interrupted = _train(data, tmp_path / "interrupted", 3)
    assert json.loads((interrupted / "weights" / "ema.json").read_text())["step"] == 3
    resumed = _train(data, interrupted, 6)
    a = load_file(str(straight / "checkpoints" / "last.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert json.loads((resumed / "weights" / "ema.json").read_text())["step"] == 6


def test_weights_with_another_config_are_refused(tmp_path):
    model = DiffAE(MICRO)
    save_weights(model, MICRO, tmp_path / "w")
    load_weights(DiffAE(MICRO), MICRO, tmp_path / "w")  # the matching pair loads
    other = DiffAEConfig(**{**MICRO.__dict__, "z_dim": 32})
    with pytest.raises(ConfigMismatchError, match="z_dim"):
        load_weights(DiffAE(other), other, tmp_path / "w")
    # A JSON edited to claim another config is caught against the config inside the weights.
    meta = json.loads((tmp_path / "w.json").read_text())
    meta["config"]["z_dim"] = 32
    (tmp_path / "w.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigMismatchError):
        load_weights(DiffAE(other), other, tmp_path / "w")
    # No pickle anywhere: the weights file is safetensors (JSON header, raw tensors).
    head = (tmp_path / "w.safetensors").read_bytes()[:16]
    assert not head.startswith(b"PK") and not head.startswith(b"\x80")


def test_config_stored_in_the_weights_old_or_corrupt(tmp_path):
    from safetensors.torch import save_file

    model = DiffAE(MICRO)
    save_weights(model, MICRO, tmp_path / "w")
    tensors = load_file(str(tmp_path / "w.safetensors"))
    cfg = json.loads((tmp_path / "w.json").read_text())["config"]
    # weights saved before morph_source existed (no such key): its default describes them, they load
    old = {k: v for k, v in cfg.items() if k != "morph_source"}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"config": json.dumps(old)})
    load_weights(DiffAE(MICRO), MICRO, tmp_path / "w")
    # a stored config that is not JSON, or names a field no config has: a clear error naming the file
    for bad in ("{not json", json.dumps({**cfg, "colour": "red"})):
        save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"config": bad})
        with pytest.raises(ConfigMismatchError, match=r"w\.safetensors: the config stored in the weights is unreadable"):
            load_weights(DiffAE(MICRO), MICRO, tmp_path / "w")
