"""Segmenting SAX slices, model-grid volumes and whole studies with the segmentation network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cardiorecon.autoencoder import prepare_study, slices_to_volume, volume_to_slices
from cardiorecon.errors import InputError
from cardiorecon.geometry import resample
from cardiorecon.models.config import load_weights, read_config
from cardiorecon.models.segnet import SegConfig, SegNet
from cardiorecon.volume import Study, Volume

DEFAULT_SEGNET = Path(__file__).resolve().parent / "weights" / "segnet_tiny"


def load_segnet(path: str | Path | None = None) -> SegNet:
    """The shipped segmentation network, or one from a weights stem / folder / training run."""
    p = DEFAULT_SEGNET if path is None else Path(path)
    candidates = [p / "model", p / "weights" / "model"] if p.is_dir() else [p.with_suffix("")]
    for stem in candidates:
        if stem.with_suffix(".safetensors").is_file():
            config = read_config(stem, SegConfig)
            net = load_weights(SegNet(config), config, stem)
            return net.eval()
    if path is None:
        raise InputError(p, "the shipped segmentation weights are missing from this installation")
    raise InputError(p, "no model.safetensors (or weights/model.safetensors) found")


@torch.no_grad()
def predict_slices(net: SegNet, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Class probabilities (N, C, H, W) of slices (N, 1, H, W) in [-1, 1]."""
    net.eval()
    out = [torch.softmax(net(x[i:i + batch_size].float()), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, net.config.num_classes, *x.shape[2:]))


def segment_array(net: SegNet, data: np.ndarray) -> np.ndarray:
    """Label map (uint8, same shape) of a model-grid array (X, Y, Z[, T]) in [-1, 1]."""
    expected = (net.config.image_size, net.config.image_size)
    if tuple(data.shape[:2]) != expected:
        raise ValueError(f"segment_array needs the model grid {expected}, got in-plane {data.shape[:2]}")
    probs = predict_slices(net, volume_to_slices(np.asarray(data, np.float32)))
    labels = slices_to_volume(probs.argmax(1, keepdim=True).to(torch.uint8), data.shape[2])
    return labels.reshape(data.shape).astype(np.uint8)


def _to_native(volume: Volume, affine: np.ndarray, shape, cval: float, sax_shifts_mm=None) -> np.ndarray:
    """Linear resampling onto the input grid; with breath-hold shifts each input slice k is sampled
    where it was acquired (`geometry.shifted_slice_affine`)."""
    if sax_shifts_mm is None or not np.any(sax_shifts_mm):
        return resample(volume, affine, shape, order=1, cval=cval).data
    from cardiorecon.geometry import shifted_slice_affine

    return np.concatenate([resample(volume, shifted_slice_affine(affine, k, sax_shifts_mm[k]), (*shape[:2], 1),
                                    order=1, cval=cval).data for k in range(shape[2])], axis=2)


def segment_study(net: SegNet, study: Study, frames: list[int] | None = None,
                  sax_shifts_mm: np.ndarray | None = None) -> tuple[Volume, Volume]:
    """Segment the SAX of `study`: (labels on the model grid, labels on the input's own grid).

    The study is put on the network's grid (in-plane resample, crop around the heart, intensities
    to [-1, 1]); class probabilities are resampled back onto the input grid (linear) before the
    argmax, so the native label map overlays the input exactly. `sax_shifts_mm` (Z, 2): breath-hold
    shifts (`cardiorecon.align`): the model grid holds the aligned slices, and each native slice is
    sampled back from where it was acquired, so the native map still overlays the input.
    """
    cfg = net.config
    grid = prepare_study(study, cfg.pixel_spacing_mm, cfg.image_size, sax_shifts_mm=sax_shifts_mm)
    frames = list(range(study.num_frames)) if frames is None else frames
    data = grid.image.data[..., frames]
    X, Y, Z, T = data.shape
    probs = predict_slices(net, volume_to_slices(data))  # (T*Z, C, X, Y)
    model_labels = slices_to_volume(probs.argmax(1, keepdim=True), Z).astype(np.uint8)
    native_shape = study.sax.spatial_shape
    native = np.zeros((*native_shape, T), np.uint8)
    for ti in range(T):
        p = probs[ti * Z:(ti + 1) * Z].permute(2, 3, 0, 1).numpy()  # (X, Y, Z, C)
        per_class = [_to_native(Volume(p[..., c], grid.image.affine), study.sax.affine, native_shape,
                                cval=1.0 if c == 0 else 0.0, sax_shifts_mm=sax_shifts_mm)
                     for c in range(cfg.num_classes)]
        native[..., ti] = np.argmax(np.stack(per_class, -1), -1).astype(np.uint8)
    meta = {"frames": frames, "segmentation": cfg.name}
    return (Volume(model_labels, grid.image.affine, meta),
            Volume(native if T > 1 else native[..., 0], study.sax.affine, meta))
