"""Where the networks run: `--device auto|cpu|cuda` resolved once, and models moved there.

Convention: tensors follow the model. Library functions that take a model move their inputs to the
model's device (`model_device`) and hand numpy results back from the CPU, so callers choose the
device only by where they put the model.
"""

from __future__ import annotations

from typing import Literal

import torch

from cardiorecon.errors import CardioReconError

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when a GPU is visible, else the CPU; 'cuda' (or 'cuda:N') without one is an error."""
    key = (name or "auto").lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CardioReconError(f"--device {name}: no CUDA device is visible to PyTorch on this machine")
        return torch.device(key)
    raise CardioReconError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")


def lightning_accelerator(name: str = "auto") -> str:
    """The Lightning accelerator for a device name: 'cpu', 'gpu' (CUDA), after resolving 'auto'."""
    return "gpu" if resolve_device(name).type == "cuda" else "cpu"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


__all__ = ["DEVICES", "DeviceName", "lightning_accelerator", "model_device", "resolve_device"]
