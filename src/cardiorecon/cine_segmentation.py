"""Labels of a dense cine (X, Y, Z, T) on the working grid, with optional smoothing along time.

4D consistency: the segmenter's class probabilities can be smoothed along time (circular Gaussian
over the cycle) before the argmax (`temporal="probability"`), or the dense intensities themselves
(`temporal="intensity"`); `none` segments each frame on its own (the cohort default, by measurement:
docs/BENCHMARKS.md, section "Cohorts").
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Temporal = Literal["none", "probability", "intensity"]


def class_probabilities(net, x):
    """Class probabilities (N, C, X, Y) on the CPU of slices (N, 1, X, Y) in [-1, 1] from a crop
    network, as `segment.segment_array` labels them: the network's window at the centre of the
    (heart-centred) working grid, background (probability 1) outside it."""
    import torch

    from cardiorecon.segment import predict_slices

    size = net.config.image_size
    X, Y = x.shape[2:]
    if min(X, Y) < size:
        raise ValueError(f"the segmenter needs at least its window {size} x {size} in-plane, got {(X, Y)}")
    x0, y0 = (X - size) // 2, (Y - size) // 2
    centre = predict_slices(net, x[:, :, x0:x0 + size, y0:y0 + size])
    if (X, Y) == (size, size):
        return centre
    probs = torch.zeros((x.shape[0], centre.shape[1], X, Y), dtype=centre.dtype)
    probs[:, 0] = 1.0
    probs[:, :, x0:x0 + size, y0:y0 + size] = centre
    return probs


def segment_4d(net, data: np.ndarray, temporal: Temporal = "none", sigma: float = 0.75,
               circular: bool = True, affine: np.ndarray | None = None, notes: list[str] | None = None
               ) -> np.ndarray:
    """Labels (X, Y, Z, T) uint8 of a dense model-grid 4D volume in [-1, 1].

    temporal: 'none' (each frame alone), 'probability' (class probabilities smoothed along time by
    a Gaussian of `sigma` frames before the argmax), 'intensity' (the images smoothed along time
    first). `circular`: the frames cover the whole cycle (time wraps around). A whole-field window
    network (`SegConfig.inference == "window"`) segments through `segment.segment_array` with the
    volume's `affine`, frame by frame; it gives labels, not probabilities, so 'probability' falls
    back to 'none' there (said in `notes`)."""
    from scipy.ndimage import gaussian_filter1d

    from cardiorecon.autoencoder import volume_to_slices

    data = np.asarray(data, np.float32)
    if data.ndim != 4:
        raise ValueError(f"segment_4d needs (X, Y, Z, T), got shape {data.shape}")
    X, Y, Z, T = data.shape
    mode = "wrap" if circular else "nearest"
    smooth = temporal != "none" and T > 2 and sigma > 0
    if temporal == "intensity" and smooth:
        data = gaussian_filter1d(data, sigma, axis=3, mode=mode)
    elif temporal not in ("none", "probability", "intensity"):
        raise ValueError(f"temporal must be none, probability or intensity, got {temporal!r}")
    if getattr(net.config, "inference", None) == "window":
        from cardiorecon.segment import segment_array

        if temporal == "probability" and smooth and notes is not None:
            notes.append("the window segmenter gives labels, not probabilities: frames segmented alone")
        return np.stack([segment_array(net, data[..., t], affine) for t in range(T)], axis=-1).astype(np.uint8)
    probs = class_probabilities(net, volume_to_slices(data)).numpy()  # (T*Z, C, X, Y), frame-major
    return labels_over_time(probs.reshape(T, Z, -1, X, Y), sigma if temporal == "probability" and smooth else 0.0,
                            circular)


def labels_over_time(probs: np.ndarray, sigma: float = 0.0, circular: bool = True) -> np.ndarray:
    """Labels (X, Y, Z, T) uint8 from class probabilities (T, Z, C, X, Y), smoothed along time by a
    Gaussian of `sigma` frames first (0: none; circular: wrapping over the cycle)."""
    from scipy.ndimage import gaussian_filter1d

    if sigma > 0 and probs.shape[0] > 2:
        probs = gaussian_filter1d(probs, sigma, axis=0, mode="wrap" if circular else "nearest")
    return np.transpose(probs.argmax(2), (2, 3, 1, 0)).astype(np.uint8)


__all__ = ["Temporal", "class_probabilities", "labels_over_time", "segment_4d"]
