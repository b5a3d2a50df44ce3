"""Two-process CPU DDP (gloo) through the `train` command: the run finishes (it used to hang at its
first checkpoint: only rank 0 reached the checkpoint barrier) and resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject
from cardiorecon.training.checkpoint import load_state

MICRO_YAML = """base: tiny
name: micro
image_size: 32
pixel_spacing_mm: 3.0
base_channels: 8
channel_mult: [1, 2]
attention_levels: [1]
encoder_channels: 8
z_dim: 16
"""
CLI = Path(sys.executable).with_name("cardiorecon")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    acq = AcquisitionConfig(sax_matrix=64, lax_matrix=48, sax_spacing_mm=3.0)
    for seed in (1, 2):
        write_subject(generate(sample_params(seed, "healthy", num_frames=4), acq, truth=False), root / "data" / f"s{seed}")
    (root / "micro.yaml").write_text(MICRO_YAML)
    return root


def _train_ddp(root: Path, run: Path, steps: int, timeout: float = 180.0) -> str:
    """Run `cardiorecon train --strategy ddp --devices 2` on the CPU; kill the whole process group
    (Lightning relaunches the command per rank) if it has not finished after `timeout` seconds."""
    cmd = [str(CLI), "train", "--config", str(root / "micro.yaml"), "--data", str(root / "data"), "--out", str(run),
           "--max-steps", str(steps), "--batch-size", "4", "--precision", "32-true", "--strategy", "ddp",
           "--devices", "2", "--checkpoint-every", "2", "--figure-every", "1000", "--lr", "1e-3"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=root, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"DDP training did not finish in {timeout:.0f} s (hung?); output tail:\n{out[-2000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow  # DDP launches of about 30 s each on the shared 2-core machine (over the 60 s budget of the default run)
def test_two_process_ddp_finishes_and_resumes(setup):
    run = setup / "run"
    out = _train_ddp(setup, run, 4)
    assert "Starting with 2 processes" in out or "MEMBER: 2/2" in out, out[-2000:]
    state = load_state(run / "checkpoints" / "last")
    assert state["global_step"] == 4
    first = {k: v.clone() for k, v in state["state_dict"].items()}
    out = _train_ddp(setup, run, 6)
    assert "resuming from" in out
    state = load_state(run / "checkpoints" / "last")
    assert state["global_step"] == 6
    assert any((state["state_dict"][k] != v).any() for k, v in first.items())  # it trained on
    assert json.loads((run / "weights" / "ema.json").read_text())["step"] == 6
    # resumed = uninterrupted, bit for bit (each rank's batches come from (seed, step, rank))
    _train_ddp(setup, setup / "straight", 6)
    straight = load_state(setup / "straight" / "checkpoints" / "last")
    assert straight["state_dict"].keys() == state["state_dict"].keys()
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, state["state_dict"][k]), k
