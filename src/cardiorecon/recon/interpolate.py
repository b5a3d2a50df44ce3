"""Classical through-plane interpolation: nearest, linear, cubic (the baselines), and their methods.

New slice j of gap k (between acquired slices k and k+1) sits at alpha = j / f, j = 1..f-1; the
acquired slices are copied unchanged to slices k * f of the output.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

from cardiorecon.recon.registry import ReconMethod, Work, register_method

Interpolation = Literal["nearest", "linear", "cubic"]


def new_slice_positions(num_slices: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each new slice: (left acquired index k, alpha in (0, 1), output index k * f + j)."""
    ks, alphas, out = [], [], []
    for k in range(num_slices - 1):
        for j in range(1, factor):
            ks.append(k)
            alphas.append(j / factor)
            out.append(k * factor + j)
    return np.array(ks, dtype=int), np.array(alphas, dtype=float), np.array(out, dtype=int)


def _nearest(stack: np.ndarray, ks: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    # Ties (alpha = 0.5) go to the lower slice.
    return stack[:, :, np.where(alphas <= 0.5, ks, ks + 1)]


def _linear(stack: np.ndarray, ks: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    return (1 - alphas) * stack[:, :, ks] + alphas * stack[:, :, ks + 1]


def _cubic(stack: np.ndarray, ks: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    if stack.shape[2] < 3:
        return _linear(stack, ks, alphas)
    spline = CubicSpline(np.arange(stack.shape[2]), stack.astype(np.float64), axis=2, bc_type="not-a-knot")
    return spline(ks + alphas).astype(np.float32)


_INTERPOLATORS = {"nearest": _nearest, "linear": _linear, "cubic": _cubic}


def interpolate_stack(stack: np.ndarray, factor: int, method: Interpolation = "linear") -> np.ndarray:
    """(X, Y, Z) -> (X, Y, (Z - 1) * factor + 1); acquired slices unchanged."""
    if method not in _INTERPOLATORS:
        raise ValueError(f"unknown interpolation {method!r}")
    X, Y, Z = stack.shape
    out = np.empty((X, Y, (Z - 1) * factor + 1), dtype=np.float32)
    out[:, :, ::factor] = stack
    ks, alphas, idx = new_slice_positions(Z, factor)
    if len(idx):
        out[:, :, idx] = _INTERPOLATORS[method](stack, ks, alphas)
    return out


class ClassicalInterpolation(ReconMethod):
    """Through-plane interpolation of the acquired slices of each frame alone."""

    seconds_per_frame = "< 0.01 s"

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        return interpolate_stack(work.stack(frame), work.factor, self.name)  # type: ignore[arg-type]


@register_method
class Nearest(ClassicalInterpolation):
    name = "nearest"
    summary = "each new slice copies the nearer acquired slice"


@register_method
class Linear(ClassicalInterpolation):
    name = "linear"
    summary = "linear interpolation between the two acquired slices around each new one"


@register_method
class Cubic(ClassicalInterpolation):
    name = "cubic"
    summary = "cubic spline through the acquired slices (linear with fewer than 3)"
