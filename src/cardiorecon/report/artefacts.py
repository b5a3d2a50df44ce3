"""Simple, named indicators of artefacts the eye finds in reconstructions, so the report can say
how often they occur instead of leaving them to be spotted:

- overshoot: the share of new-slice voxels whose intensity lies outside the range of the two
  acquired slices around them (by more than `tolerance`). Nearest and linear interpolation cannot
  overshoot; spline ringing and a generative prior's invented structure do.
- islands: connected components of each predicted label class beyond the largest one, in 3D
  (a false contour island above the apex, a stray blob outside the heart).
"""

from __future__ import annotations

import numpy as np


def overshoot_fraction(dense: np.ndarray, new_slices: list[int], tolerance: float = 0.05) -> float:
    """Share (0..1) of voxels of the new slices of `dense` (X, Y, Z) outside [min, max] of the
    nearest acquired slice below and above (intensity units of `dense`, tolerance added)."""
    Z = dense.shape[2]
    new = set(int(z) for z in new_slices)
    acquired = [z for z in range(Z) if z not in new]
    outside = total = 0
    for z in sorted(new):
        below = [a for a in acquired if a < z]
        above = [a for a in acquired if a > z]
        if not below or not above:
            continue
        a, b = dense[:, :, below[-1]], dense[:, :, above[0]]
        lo, hi = np.minimum(a, b) - tolerance, np.maximum(a, b) + tolerance
        v = dense[:, :, z]
        outside += int(((v < lo) | (v > hi)).sum())
        total += v.size
    return outside / total if total else float("nan")


def islands(labels: np.ndarray, classes: tuple[int, ...] = (1, 2, 3)) -> int:
    """Connected components (26-connectivity, 3D) of each class beyond its largest, summed."""
    from scipy import ndimage

    count = 0
    structure = np.ones((3,) * labels.ndim, bool)
    for c in classes:
        _, n = ndimage.label(labels == c, structure=structure)
        count += max(n - 1, 0)
    return count


def indicators(dense: np.ndarray, pred: np.ndarray | None, new_slices: list[int]) -> dict[str, float]:
    out = {"overshoot": overshoot_fraction(dense, new_slices)}
    if pred is not None:
        out["islands"] = float(islands(pred))
    return out
