"""`ReconConfig`: the reconstruction settings every method reads its own options from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from cardiorecon.recon.adapt import AdaptConfig
from cardiorecon.recon.fusion import FusionConfig
from cardiorecon.recon.lag import LAG_INITS, LAG_WARM, LagConfig
from cardiorecon.recon.register import RegisterConfig

#: This project's CPU default for `lag` (refining register: ReconConfig.lag_init). K = 1 differentiable DDIM step
#: from the 0.4 T codes (8-step inversion), at most 3 iterations, on the central 64 px window of each new slice (the
#: prior's own field of view at the centre of the heart-centred working grid; register's volume outside it).
#: Chosen by measurement (docs/BENCHMARKS.md, issue 28, "window"): on the UK Biobank-sized phantom hf_2000 (factor 5,
#: 112 px grid, 3 views) 25 s a frame and SSIM 0.836 / PSNR 25.09 dB (register 0.831 / 25.06; the whole slice with 10
#: iterations, the default before: 279-355 s, 0.828 / 22.69 dB); biv-me LAX hold-out NCC above register on 5 of 5
#: views; ep_preclinical slice-drop -0.028 SSIM against register (10 iterations: -0.082).
FAST_LAG = LagConfig(ddim_steps=1, invert_steps=8, depth=0.4, max_iterations=3, lr=2e-2, lr_halve_every=5,
                     patience=5, final_decode_steps=8, window=64)


@dataclass(frozen=True)
class ReconConfig:
    invert_steps: int = 8
    decode_steps: int = 8
    lag: LagConfig = FAST_LAG
    lax_samples: int = 3
    # diffae: how far DDIM inversion goes, as a fraction of T. 1.0 is the DiffAE paper (x_T pure
    # noise). Measured on hf_2000 (ED+ES, factor 5): adjacent slices' full-depth x_T are nearly
    # orthogonal (cosine ~0.05: they encode each slice's own noise), so their slerp decodes to a new
    # random image: SSIM of the new slices 0.565 (linear 0.685). Codes at 0.4 T keep the anatomy:
    # SSIM 0.755, PSNR 20.6 dB (linear 20.35), and 8 steps instead of 20.
    depth: float = 0.4
    grid_spacing_mm: float | None = None  # classical methods without weights: the tiny model grid
    grid_size: int | None = None
    register: RegisterConfig = RegisterConfig()
    fusion: FusionConfig = FusionConfig()
    # lag's start: the diffae codes, the dmcvr codes (DMCVR weights, morphology features fixed), or the
    # codes of the register / fusion volume, refined (LAG_INITS; anything else is refused). 'register' by
    # measurement (issue 28, docs/BENCHMARKS.md; 21 real slice-drop cases held out from both priors, ED+ES):
    # from register SSIM 0.439 / PSNR 17.48 dB against diffae's codes 0.373 / 15.71 (register 0.444 / 17.60).
    lag_init: str = "register"
    # lag over a cine (4D reuse, issue 17): a frame whose previous cine frame was optimised starts from
    # that frame's optimised codes ('previous'), from its own seeds plus that frame's correction
    # ('delta'), or from its own seeds ('off'); the seed term always anchors to its own seeds.
    # 'off' by measurement (docs/BENCHMARKS.md, Cohorts; 1 phantom x 8 frames, 10 iterations): 'delta' lowered
    # the loss (last 0.32 -> 0.21-0.28) and raised the LAX NCC (0.979 -> 0.983) but moved the new slices
    # away from the truth (SSIM 0.821 -> 0.758; LV/RV curve RMS 1.27/2.09 -> 1.37/2.88 mL).
    lag_warm: str = "off"
    lag_warm_iterations: int | None = None  # iterations of a warm-started frame (None: lag.max_iterations)
    # diffae, lag, dmcvr: fine-tune a copy of the model for this many steps on the study's own acquired
    # SAX slices (all frames) and its given LAX views (on the model grid) before reconstructing; 0 = the
    # shipped weights as they are (recon/adapt.py)
    adapt: int = 0
    adapt_config: AdaptConfig = AdaptConfig()
    # a method's whole options by method name (an instance of its `Options`), in place of what the fields
    # above give it; the only home of the options of a method the fields above do not name (selfsr)
    method_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.lag_init not in LAG_INITS:
            raise ValueError(f"unknown lag start {self.lag_init!r}; choose from {', '.join(LAG_INITS)}")
        if self.lag_warm not in LAG_WARM:
            raise ValueError(f"unknown lag warm start {self.lag_warm!r}; choose from {', '.join(LAG_WARM)}")


__all__ = ["FAST_LAG", "LAG_INITS", "LAG_WARM", "ReconConfig"]
