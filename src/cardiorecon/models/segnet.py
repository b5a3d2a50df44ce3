"""The 2D SAX segmentation network (background, LV cavity, LV myocardium, RV cavity).

MONAI's BasicUNet, on the same model grid as the DiffAE (pixel spacing and crop size of the
config), with its encoder features exposed for DMCVR's morphology condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class SegConfig:
    name: str = "seg_tiny"
    image_size: int = 64
    pixel_spacing_mm: float = 2.0
    num_classes: int = 4
    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    # "crop": slices on the DiffAE model grid (image_size pixels around the heart); "window": any field
    # of view at pixel_spacing_mm, by sliding windows of image_size pixels (cardiorecon.segment.segment_slices)
    inference: Literal["crop", "window"] = "crop"

    def __post_init__(self):
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four poolings), got {self.image_size}")
        if len(self.features) != 6:
            raise ValueError(f"BasicUNet takes 6 feature sizes, got {self.features}")


NAMED_SEG_CONFIGS = {
    "seg_tiny": SegConfig(),
    # whole field of view, trained on synthetic appearance (training/synth.py)
    "seg_synth": SegConfig(name="seg_synth", image_size=96, pixel_spacing_mm=1.5,
                           features=(16, 32, 64, 128, 256, 16), inference="window"),
    # the same network fine-tuned on real labelled hearts (ACDC) beside the synthetic images (issue 25)
    "seg_real": SegConfig(name="seg_real", image_size=96, pixel_spacing_mm=1.5,
                          features=(16, 32, 64, 128, 256, 16), inference="window"),
}


class SegNet(nn.Module):
    def __init__(self, config: SegConfig):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.config = config
        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=config.num_classes,
                              features=config.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) of slices (B, 1, H, W) in [-1, 1]."""
        return self.unet(x)

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps at full, 1/2, 1/4, 1/8 and 1/16 resolution."""
        u = self.unet
        feats = [u.conv_0(x)]
        for down in (u.down_1, u.down_2, u.down_3, u.down_4):
            feats.append(down(feats[-1]))
        return feats

    def feature_channels(self, level: int) -> int:
        return self.config.features[level]
