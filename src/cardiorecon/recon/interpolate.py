"""Classical through-plane interpolation: nearest, linear, cubic (the baselines).

New slice j of gap k (between acquired slices k and k+1) sits at alpha = j / f, j = 1..f-1; the
acquired slices are copied unchanged to slices k * f of the output.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

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


def interpolate_stack(stack: np.ndarray, factor: int, method: Interpolation = "linear") -> np.ndarray:
    """(X, Y, Z) -> (X, Y, (Z - 1) * factor + 1); acquired slices unchanged."""
    X, Y, Z = stack.shape
    out = np.empty((X, Y, (Z - 1) * factor + 1), dtype=np.float32)
    out[:, :, ::factor] = stack
    ks, alphas, idx = new_slice_positions(Z, factor)
    if method == "nearest":
        # Ties (alpha = 0.5) go to the lower slice.
        src = np.where(alphas <= 0.5, ks, ks + 1)
        out[:, :, idx] = stack[:, :, src]
    elif method == "linear":
        out[:, :, idx] = (1 - alphas) * stack[:, :, ks] + alphas * stack[:, :, ks + 1]
    elif method == "cubic":
        if Z < 3:
            return interpolate_stack(stack, factor, "linear")
        spline = CubicSpline(np.arange(Z), stack.astype(np.float64), axis=2, bc_type="not-a-knot")
        out[:, :, idx] = spline(ks + alphas).astype(np.float32)
    else:
        raise ValueError(f"unknown interpolation {method!r}")
    return out
