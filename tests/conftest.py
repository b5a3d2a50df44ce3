from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (a fresh clone has no ../shared); skipping")
    return SHARED_DATA


def oblique_affine(spacing=(1.8, 1.6, 10.0), angles=(0.3, -0.5, 0.8), origin=(-40.0, 25.0, 110.0), lps=False):
    """A rotated, anisotropic affine; with lps=True flipped as DICOM LPS data read naively."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    a[:3, 3] = origin
    if lps:
        a = np.diag([-1.0, -1.0, 1.0, 1.0]) @ a
    return a


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture
def one_thread():
    """One torch thread for a test (several times faster on shared, loaded cores); restored after.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def micro_diffae(config):
    """A small DiffAE (seed 0) with its zero inits broken, so that outputs depend on the codes."""
    import torch

    from cardiorecon.models.diffae import DiffAE

    torch.manual_seed(0)
    model = DiffAE(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()
