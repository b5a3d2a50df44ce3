"""The `dmcvr` method: latent interpolation with DMCVR's morphology-conditioned decoder.

The acquired slices' morphology features (the segmentation network's view of each slice,
models/dmcvr.py) condition the inversion and are lerped like z_sem between slices; nothing is
optimised at test time (`recon.latent_interp` does the work with a DMCVR model).
"""

from __future__ import annotations

from cardiorecon.recon.latent_interp import DiffAEInterpolation
from cardiorecon.recon.registry import register_method


@register_method
class DMCVRInterpolation(DiffAEInterpolation):
    name = "dmcvr"
    summary = "as diffae, with the interpolated morphology code (LV, myocardium, RV) conditioning the decoder"
    weights = "dmcvr"
    seconds_per_frame = "about 30 s"


__all__ = ["DMCVRInterpolation"]
