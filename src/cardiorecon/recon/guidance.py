"""The guiding LAX views of a reconstruction on its dense working grid (lag and fusion read them)."""

from __future__ import annotations

import warnings

import torch

from cardiorecon.errors import InputError
from cardiorecon.geometry import upsampled_affine, upsampled_num_slices
from cardiorecon.lax_operator import LaxOperator
from cardiorecon.phase import lax_frame
from cardiorecon.preprocess import intensity_map
from cardiorecon.volume import Study


def guiding_views(study: Study, grid, factor: int, lax_views: list[str] | None, samples: int,
                  notes: list[str]) -> dict[str, LaxOperator]:
    """LAX operators on the dense working grid (`grid`: a ModelGrid) for the chosen views (None: all);
    views that miss the stack are reported by name in `notes` and skipped."""
    names = list(study.lax) if lax_views is None else list(lax_views)
    missing = [n for n in names if n not in study.lax]
    if missing:
        raise InputError(study.meta.get("source"), f"LAX view(s) {missing} not in this study (has {sorted(study.lax)})")
    dense_affine = upsampled_affine(grid.image.affine, factor)
    X, Y, Z = grid.image.spatial_shape
    shape = (X, Y, upsampled_num_slices(Z, factor))
    ops = {}
    for n in names:
        op = LaxOperator.for_view(dense_affine, shape, study.lax[n], samples)
        if op.num_valid == 0:
            msg = f"LAX view {n!r} does not cross the SAX stack; skipped"
            warnings.warn(msg)
            notes.append(msg)
            continue
        ops[n] = op
    return ops


def lax_images(study: Study, operators: dict[str, LaxOperator], t: int) -> dict[str, torch.Tensor]:
    """The guiding LAX frames paired with SAX frame t, each mapped to [-1, 1] on its own."""
    images = {}
    for n in operators:
        lax_img = lax_frame(study.lax[n], t, study.num_frames)
        images[n] = torch.from_numpy(intensity_map(lax_img).forward(lax_img))
    return images


__all__ = ["guiding_views", "lax_images"]
