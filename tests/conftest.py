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


#: The warnings the tests provoke on purpose or that the small synthetic cases raise as a matter of course
#: (message regexes); every other warning shows in pytest's summary. A test that checks a warning uses
#: `pytest.warns`, which sees it whatever this filter says.
EXPECTED_WARNINGS = (
    r"LAX view .* does not cross the SAX stack",  # tiny grids and made-up geometry
    r"no LAX view guides this study",  # lag without LAX, on purpose
    r".*does not have many workers",  # Lightning on tiny data sets
    r".*GPU available but not used",
    r".*(LitLogger|tensorboardX|tensorboard)",  # Lightning's logger hints
)


@pytest.fixture(autouse=True)
def _quiet_expected_warnings():
    with warnings.catch_warnings():
        for pattern in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
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


def micro_config(**changes):
    """The tests' small DiffAE config (32 px at 4 mm, 8 base channels, z_sem of 16), with `changes`."""
    from cardiorecon.models.config import DiffAEConfig

    base = dict(name="micro", image_size=32, pixel_spacing_mm=4.0, base_channels=8, channel_mult=(1, 2),
                attention_levels=(), encoder_channels=8, z_dim=16)
    return DiffAEConfig(**{**base, **changes})


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
