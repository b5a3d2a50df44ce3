"""Registration-based slice interpolation (the `register` method).

For every gap between adjacent acquired SAX slices a and b, two dense 2D deformations are
estimated: u_ab (a fixed, b moving: a(x) ~ b(x + u_ab(x))) and u_ba. New slice j of the gap, at
alpha = j / f, is the symmetric blend

    I_alpha(x) = (1 - alpha) * a(x + alpha * u_ba(x)) + alpha * b(x + (1 - alpha) * u_ab(x)),

each neighbour warped part-way toward the other, the nearer one weighted more; at alpha -> 0 it is
a, at alpha -> 1 it is b. Labels are warped the same way with nearest-neighbour sampling and the
nearer neighbour's warped labels are kept (labels cannot be blended).

Library choice, measured (benchmarks/bench_register_choice.py; the dropped middle slices of real
slice-drop, 64 px, 2 mm model grid, ED and a mid frame; linear for reference):

    variant (SimpleITK 2.5)                    ep_preclinical SSIM/PSNR   Sunnybrook SC-HF-I-1    s/slice
    linear                                     0.718 / 23.57              0.426 / 17.42           0
    SymmetricForcesDemons, 80 it, sigma 1.5    0.747 / 23.71              0.476 / 17.58           0.11
    FastSymmetricForcesDemons, 80, 1.5         0.760 / 24.09              0.481 / 17.73           0.10
    DiffeomorphicDemons, 80, 1.5               0.758 / 24.00              0.480 / 17.76           0.19
    DiffeomorphicDemons, 150, 2.0              0.751 / 23.50              0.479 / 17.90           0.33
    B-spline 6x6 mesh, mean squares, LBFGSB    0.680 / 21.62              0.432 / 17.24           0.61
    FastSymmetricForces + 2-level pyramid      0.730 / 22.61              0.469 / 17.83           0.48

FastSymmetricForcesDemons (80 iterations, field smoothing sigma 1.5 px, one level) is the best on
both cases and the fastest, so it is the default. The B-spline transform (the family itk-elastix
provides) was worse and 6x slower here, so itk-elastix (a much larger dependency) was not added; no
registration package for torch is in this environment. The fields are applied with
scipy.ndimage.map_coordinates (linear for images, nearest for labels), edges clamped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardiorecon.recon.interpolate import new_slice_positions
from cardiorecon.recon.registry import ReconMethod, Work, register_method


@dataclass(frozen=True)
class RegisterConfig:
    """Demons settings (pixels of the working grid)."""

    iterations: int = 80
    field_sigma_px: float = 1.5  # Gaussian smoothing of the displacement field (the demons regulariser)
    filter: str = "FastSymmetricForcesDemonsRegistrationFilter"
    # ITK threads per registration. Measured on these 2 shared cores (load ~6): one ep_preclinical
    # frame (9 gaps, both ways) 1.1 s at 1 thread, 3.1 s at 2; a 64 px slice is too small to split.
    num_threads: int = 1


def _to_itk(image: np.ndarray):
    import SimpleITK as sitk

    # SimpleITK indexes arrays (y, x): transpose so that ITK's first axis is our axis 0.
    return sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(image, np.float32).T))


def displacement(fixed: np.ndarray, moving: np.ndarray, config: RegisterConfig = RegisterConfig()) -> np.ndarray:
    """Dense displacement u (X, Y, 2), in pixels along axes 0 and 1, such that
    fixed(x) ~ moving(x + u(x)). Inputs (X, Y) float."""
    import SimpleITK as sitk

    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if np.ptp(fixed) == 0 or np.ptp(moving) == 0:
        return np.zeros(np.shape(fixed) + (2,), np.float32)  # a flat image carries no correspondence
    demons = getattr(sitk, config.filter)()
    demons.SetNumberOfIterations(int(config.iterations))
    demons.SetStandardDeviations(float(config.field_sigma_px))
    demons.SetNumberOfThreads(int(config.num_threads))
    field = demons.Execute(_to_itk(fixed), _to_itk(moving))
    # (Y, X, 2) with components (along x = our axis 0, along y = our axis 1).
    return np.ascontiguousarray(sitk.GetArrayFromImage(field).transpose(1, 0, 2)).astype(np.float32)


def warp(image: np.ndarray, u: np.ndarray, scale: float = 1.0, order: int = 1) -> np.ndarray:
    """image(x + scale * u(x)) on the same (X, Y) grid; order 1 linear, 0 nearest (labels)."""
    X, Y = image.shape
    ii, jj = np.meshgrid(np.arange(X, dtype=np.float32), np.arange(Y, dtype=np.float32), indexing="ij")
    coords = np.stack([ii + scale * u[..., 0], jj + scale * u[..., 1]])
    return ndimage.map_coordinates(np.asarray(image), coords, order=order, mode="nearest")


@dataclass
class GapFields:
    """The two deformations of every gap: forward[k] = u from slice k to k+1, backward[k] = from k+1 to k."""

    forward: list[np.ndarray]
    backward: list[np.ndarray]


def gap_fields(stack: np.ndarray, config: RegisterConfig = RegisterConfig()) -> GapFields:
    """Register every pair of adjacent slices of (X, Y, Z), both ways."""
    Z = stack.shape[2]
    fwd = [displacement(stack[:, :, k], stack[:, :, k + 1], config) for k in range(Z - 1)]
    bwd = [displacement(stack[:, :, k + 1], stack[:, :, k], config) for k in range(Z - 1)]
    return GapFields(fwd, bwd)


def register_stack(stack: np.ndarray, factor: int, config: RegisterConfig = RegisterConfig(),
                   fields: GapFields | None = None) -> np.ndarray:
    """(X, Y, Z) -> (X, Y, (Z - 1) * factor + 1): acquired slices unchanged, each new slice the
    symmetric part-way warp-and-blend of its two neighbours (module docstring)."""
    X, Y, Z = stack.shape
    out = np.empty((X, Y, (Z - 1) * factor + 1), np.float32)
    out[:, :, ::factor] = stack
    if factor == 1 or Z < 2:
        return out
    fields = fields or gap_fields(stack, config)
    for k, alpha, idx in zip(*new_slice_positions(Z, factor)):
        a, b = stack[:, :, k], stack[:, :, k + 1]
        wa = warp(a, fields.backward[k], alpha)  # a moved alpha of the way toward b
        wb = warp(b, fields.forward[k], 1 - alpha)  # b moved (1 - alpha) of the way toward a
        out[:, :, idx] = (1 - alpha) * wa + alpha * wb
    return out


def register_labels(labels: np.ndarray, factor: int, fields: GapFields) -> np.ndarray:
    """Label maps (X, Y, Z) carried along the same fields with nearest sampling: each new slice
    takes the warped labels of its nearer neighbour (ties to the lower slice)."""
    X, Y, Z = labels.shape
    out = np.empty((X, Y, (Z - 1) * factor + 1), labels.dtype)
    out[:, :, ::factor] = labels
    for k, alpha, idx in zip(*new_slice_positions(Z, factor)):
        if alpha <= 0.5:
            out[:, :, idx] = warp(labels[:, :, k], fields.backward[k], alpha, order=0)
        else:
            out[:, :, idx] = warp(labels[:, :, k + 1], fields.forward[k], 1 - alpha, order=0)
    return out


@register_method
class Register(ReconMethod):
    """Demons registration between adjacent acquired slices, each new slice a part-way warp and blend."""

    name = "register"
    summary = "warp-and-blend of the neighbouring slices along demons deformations (the subject's images only)"
    seconds_per_frame = "2-7 s"
    Options = RegisterConfig

    @classmethod
    def options_from(cls, config) -> RegisterConfig:
        return config.register

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        return register_stack(work.stack(frame), work.factor, self.options)


__all__ = ["GapFields", "Register", "RegisterConfig", "displacement", "gap_fields", "register_labels", "register_stack", "warp"]
