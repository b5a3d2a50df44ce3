"""DMCVR (arXiv 2308.09223): the DiffAE decoder conditioned, besides z_sem by adaptive group norm,
on regional morphology features concatenated into the UNet at one resolution.

Two regional morphology encoders (config field `morph_source`), both fed by the frozen
segmentation network:
- "features" (`dmcvr_tiny`): its encoder features at `morph_level` (16 x 16 for the 64 px
  `tiny` grid, 32 channels) weighted by its own predicted probability of each structure (LV cavity,
  LV myocardium, RV cavity), averaged down to that resolution: 3 x 32 = 96 channels that say, region
  by region, what the heart looks like there;
- "labels" (`dmcvr_labels_tiny`, shipped): its predicted label map (the three class probabilities at full
  resolution) through a small conv encoder of our own, trained with the decoder.
Either way the decoder takes them through a 3x3 conv and concatenates them at 1 / 2**morph_level
resolution (DecoderUNet's extra input) while z_sem conditions every block by adaptive group norm.
Which one ships was decided by an equal-budget comparison: see the DMCVR model card.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from cardiorecon.errors import ConfigMismatchError
from cardiorecon.models.config import DiffAEConfig
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.segnet import SegConfig, SegNet

#: label values of the structures whose regions the morphology code describes
MORPH_CLASSES = (1, 2, 3)


MORPH_SOURCES = ("features", "labels")


def morph_channels(seg_config: SegConfig, level: int, source: str = "features") -> int:
    if source not in MORPH_SOURCES:
        raise ConfigMismatchError(f"morph_source {source!r} is not one of {MORPH_SOURCES}")
    return len(MORPH_CLASSES) * (seg_config.features[level] if source == "features" else 1)


class MorphologyEncoder(nn.Module):
    """Frozen: slices (B, 1, H, W) in [-1, 1] -> regional features (B, 3 C, H / 2**level, W / 2**level)
    ("features"), or the predicted probability maps of the three structures (B, 3, H, W) ("labels").

    A crop network (`seg_tiny`) works on the DiffAE grid itself. A whole-field window network
    (`seg_real`, 1.5 mm; issue 28: the morphology of the network trained on real labelled hearts) sees
    each slice resampled from the DiffAE's pixel spacing (`grid_spacing_mm`) to its own, padded to a
    multiple of 16 with the background value; its class probabilities come back to the DiffAE grid
    (bilinear, so they still sum to one). Only the "labels" source is defined for it: its encoder
    features live on its own grid."""

    def __init__(self, segnet: SegNet, level: int = 2, source: str = "features", grid_spacing_mm: float | None = None):
        super().__init__()
        self.segnet = segnet.eval().requires_grad_(False)
        self.level = level
        self.source = source
        morph_channels(segnet.config, level, source)  # refuses an unknown source
        self.window = segnet.config.inference == "window"
        if self.window and (source != "labels" or grid_spacing_mm is None):
            raise ConfigMismatchError(f"the window segmentation network {segnet.config.name!r} gives DMCVR's "
                                      f"morphology only as label maps (morph_source 'labels') on a grid of known "
                                      f"pixel spacing")
        self.scale = 1.0 if grid_spacing_mm is None else grid_spacing_mm / segnet.config.pixel_spacing_mm

    def _window_probs(self, x0: torch.Tensor) -> torch.Tensor:
        h, w = x0.shape[-2:]
        size = (round(h * self.scale), round(w * self.scale))
        x = F.interpolate(x0.float(), size=size, mode="bilinear", align_corners=False)
        ph, pw = (-size[0]) % 16, (-size[1]) % 16
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=-1.0)
        probs = torch.softmax(self.segnet(x).float(), dim=1)
        probs = probs[..., ph // 2:ph // 2 + size[0], pw // 2:pw // 2 + size[1]]
        return F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)

    @property
    def channels(self) -> int:
        return morph_channels(self.segnet.config, self.level, self.source)

    def train(self, mode: bool = True):  # always in eval mode: a fixed feature extractor
        return super().train(False)

    @torch.no_grad()
    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        if self.window:
            return self._window_probs(x0)[:, list(MORPH_CLASSES)].contiguous()
        probs = torch.softmax(self.segnet(x0).float(), dim=1)
        if self.source == "labels":
            return probs[:, list(MORPH_CLASSES)].contiguous()
        feats = self.segnet.encoder_features(x0)[self.level].float()
        probs = F.adaptive_avg_pool2d(probs, feats.shape[-2:])
        return torch.cat([feats * probs[:, c:c + 1] for c in MORPH_CLASSES], dim=1)


class DMCVR(nn.Module):
    """The morphology-conditioned DiffAE and its (frozen) morphology encoder, on one model grid."""

    def __init__(self, config: DiffAEConfig, seg_config: SegConfig):
        super().__init__()
        check_pair(config, seg_config)
        self.config, self.seg_config = config, seg_config
        self.diffae = DiffAE(config)
        self.morphology = MorphologyEncoder(SegNet(seg_config), config.morph_level, config.morph_source,
                                            config.pixel_spacing_mm)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.diffae.encode(x0)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """cond = (z_sem, morphology features)."""
        return self.diffae.eps(x_t, t, cond)


def check_pair(config: DiffAEConfig, seg_config: SegConfig) -> None:
    """Refuse a decoder and a segmentation network that do not fit together."""
    if config.morph_channels <= 0:
        raise ConfigMismatchError(f"DiffAE config {config.name!r} has no morphology input (morph_channels = 0)")
    want = morph_channels(seg_config, config.morph_level, config.morph_source)
    if config.morph_channels != want:
        raise ConfigMismatchError(
            f"DiffAE config {config.name!r} expects {config.morph_channels} morphology channels ({config.morph_source} "
            f"at level {config.morph_level}), segmentation config {seg_config.name!r} gives {want}")
    if seg_config.inference == "window":  # any grid: the slices are resampled to its spacing
        if config.morph_source != "labels":
            raise ConfigMismatchError(f"DiffAE config {config.name!r} takes {config.morph_source!r} morphology; the "
                                      f"window segmentation network {seg_config.name!r} gives only label maps")
        return
    if (config.image_size, config.pixel_spacing_mm) != (seg_config.image_size, seg_config.pixel_spacing_mm):
        raise ConfigMismatchError(
            f"DiffAE grid {config.image_size} px at {config.pixel_spacing_mm} mm differs from the segmentation "
            f"grid {seg_config.image_size} px at {seg_config.pixel_spacing_mm} mm")


def init_from_diffae(target: DiffAE, source: DiffAE) -> list[str]:
    """Copy a plain DiffAE's weights into a morphology-conditioned one of the same architecture.

    Tensors that gained input channels for the morphology features (the first residual block at
    morph_level: its first norm, conv and skip) get the old weights in their first channels and
    zeros for the new inputs; the new 3x3 conv keeps its random init. Returns the names of the
    tensors that were padded.

    With `morph_norm="split"` the widened block normalises the old channels in their own groups, so
    the start is exact: the output equals the plain DiffAE's whatever the morphology (tested). With
    "joint" (the shipped weights' form) one group norm spans old and new channels and regroups the
    old ones (groups of 2 become groups of 6 in `tiny`): the start is only close, and a warning says so.
    """
    a = dataclasses.replace(target.config, morph_channels=0, morph_source="features", morph_norm="joint", name="")
    b = dataclasses.replace(source.config, morph_channels=0, morph_source="features", morph_norm="joint", name="")
    if a != b:
        raise ConfigMismatchError(f"cannot initialise {target.config.name!r} from {source.config.name!r}: "
                                  f"the architectures differ beyond the morphology input")
    if target.config.morph_norm not in ("joint", "split"):
        raise ConfigMismatchError(f"morph_norm must be 'joint' or 'split', got {target.config.morph_norm!r}")
    if target.config.morph_norm == "joint":
        warnings.warn(f"{target.config.name!r} normalises the old and the morphology channels jointly, which regroups "
                      "the old channels: the initialised decoder does not reproduce the plain DiffAE exactly "
                      "(morph_norm='split' does)")
    own, src = target.state_dict(), source.state_dict()
    padded = []
    with torch.no_grad():
        for k, v in own.items():
            if k not in src:
                continue  # the morphology conv (and the label-map encoder)
            s = src[k]
            if v.shape == s.shape:
                v.copy_(s)
                continue
            if v.ndim != s.ndim or v.shape[0] != s.shape[0] and v.ndim > 1:
                raise ConfigMismatchError(f"{k}: cannot pad {tuple(s.shape)} into {tuple(v.shape)}")
            if v.ndim == 1:  # group-norm scale/bias over the widened input
                v[: s.shape[0]].copy_(s)
            else:
                v.zero_()
                v[:, : s.shape[1]].copy_(s)
            padded.append(k)
    return padded
