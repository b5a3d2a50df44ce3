"""2D SAX slices for training: every slice of every frame of a list of subjects, on the model
grid (in-plane resample, crop around the heart), intensities in [-1, 1]; and augmentation (rotations,
shifts and gamma; never a flip, which would put the RV on the wrong side of the septum)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.errors import InputError
from cardiorecon.io import read_study
from cardiorecon.io.nifti import atomic_write
from cardiorecon.preprocess import heart_centre, intensity_map, to_model_grid
from cardiorecon.volume import Study


def study_slices(study: Study, spacing_mm: float, size: int, exclude_frames: list[int] = ()) -> np.ndarray:
    """All SAX slices of all frames (but `exclude_frames`) on the model grid: (Z * T', size, size)
    float32 in [-1, 1]."""
    centre, _ = heart_centre(study)
    grid = to_model_grid(study.sax, spacing_mm, size, centre)
    data = intensity_map(grid.data).forward(grid.data)  # (X, Y, Z, T), normalised over all frames
    keep = [t for t in range(data.shape[3]) if t not in set(exclude_frames)]
    data = data[..., keep]
    X, Y, Z, T = data.shape
    return np.ascontiguousarray(np.transpose(data, (3, 2, 0, 1)).reshape(Z * T, X, Y))


def subject_folders(paths: list[str | Path]) -> list[Path]:
    """Expand each path: a subject folder stays, a folder of subject folders gives its children."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(p, "data folder not found")
        children = sorted(c for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
        is_subject = p.is_file() or any((p / n).exists() for n in ("sa.nii.gz", "sa_ED.nii.gz")) or \
            any(p.glob("*.dcm")) or any(p.glob("*_SA_ED.nii.gz")) or any(p.glob("patient*_4d.nii.gz"))
        if is_subject or not children:
            out.append(p)
        else:
            out.extend(children)
    return out


def slice_bank_file(path: Path, size: int) -> np.ndarray:
    """A prepared slice bank: (N, size, size) in [-1, 1] saved with numpy (.npy)."""
    try:
        bank = np.load(path)
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a readable .npy slice bank ({e})") from None
    if bank.ndim != 3 or bank.shape[1:] != (size, size) or len(bank) == 0:
        raise InputError(path, f"a slice bank must be (N, {size}, {size}), got {bank.shape}")
    if not np.isfinite(bank).all() or np.abs(bank).max() > 1.0 + 1e-3:
        raise InputError(path, "a slice bank must hold finite intensities in [-1, 1]")
    return bank.astype(np.float16)


def build_bank(paths: list[str | Path], spacing_mm: float, size: int, cache: Path | None = None,
               progress: bool = True, exclude_frames: dict[str, list[int]] | None = None) -> np.ndarray:
    """Slices of every subject under `paths` (N, size, size) float16, cached at `cache` (.npy). A
    path ending in .npy is a prepared slice bank (`slice_bank_file`), taken as it is; a path given
    twice is drawn from twice as often.

    `exclude_frames` maps a subject folder's name to frames left out (held out for evaluation).
    """
    folders = subject_folders(paths)
    exclude_frames = exclude_frames or {}
    key = {"sources": [str(f.resolve()) for f in folders], "spacing_mm": spacing_mm, "size": size,
           "exclude_frames": exclude_frames}
    banks = {str(f.resolve()): f.stat().st_mtime_ns for f in folders if f.suffix == ".npy"}
    if banks:  # a prepared bank rewritten in place invalidates the cache
        key["banks"] = banks
    if cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
        if json.loads(cache.with_suffix(".json").read_text()) == key:
            return np.load(cache)
    slices = []
    for i, folder in enumerate(folders):
        excluded = exclude_frames.get(folder.name, [])
        if folder.suffix == ".npy":  # a prepared slice bank (e.g. training.synth.synthetic_bank)
            slices.append(slice_bank_file(folder, size))
        else:
            slices.append(study_slices(read_study(folder), spacing_mm, size, excluded).astype(np.float16))
        if progress:
            print(f"  data [{i + 1}/{len(folders)}] {folder}: {len(slices[-1])} slices", flush=True)
    bank = np.concatenate(slices)
    if cache is not None:
        atomic_write(cache, lambda tmp: np.save(tmp, bank), suffix=".npy")
        atomic_write(cache.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(key)), suffix=".json")
    return bank


def _random_theta(B: int, generator: torch.Generator, max_rotation_deg: float, flip_prob: float = 0.0) -> torch.Tensor:
    """Rotation matrices (B, 2, 3), det +1: never a mirror. A left-right (or up-down) flip puts the RV
    on the wrong side of the septum, so `flip_prob` must be 0; the flip draw is still made, so that
    the random stream (and the resume of runs started before flips were removed) is unchanged."""
    if flip_prob:
        raise ValueError(f"flip_prob={flip_prob}: flips mirror the anatomy (RV on the wrong side); "
                         "use rotations and shifts only")
    angle = (torch.rand(B, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    torch.rand(B, 2, generator=generator)  # the former flip draw (see above)
    return theta


def training_theta(B: int, generator: torch.Generator, max_rotation_deg: float = 10.0,
                   max_shift_px: float = 0.0, size: int = 64) -> torch.Tensor:
    """The geometric transforms of diffusion training (DiffAE, DMCVR): a rotation within
    +-max_rotation_deg and an in-plane shift within +-max_shift_px pixels; proper (det +1), no flip."""
    theta = _random_theta(B, generator, max_rotation_deg)
    if max_shift_px:
        theta[:, :, 2] = (torch.rand(B, 2, generator=generator) * 2 - 1) * (2 * max_shift_px / size)
    return theta


def _gamma(x: torch.Tensor, generator: torch.Generator, gamma_range: tuple[float, float]) -> torch.Tensor:
    log_gamma = torch.empty(x.shape[0]).uniform_(math.log(gamma_range[0]), math.log(gamma_range[1]),
                                                 generator=generator)
    u = ((x + 1) / 2).clamp(0, 1) ** log_gamma.exp().view(-1, 1, 1, 1)
    return u * 2 - 1


def _bias_field(x: torch.Tensor, generator: torch.Generator, max_log_amplitude: float) -> torch.Tensor:
    """A smooth multiplicative field (exp of a random 2nd-order polynomial in the image coordinates,
    its log within about +-max_log_amplitude) on intensities in [-1, 1], as a surface coil leaves it;
    mapped to [0, 1] and back, clipped."""
    B, _, H, W = x.shape
    u = torch.linspace(-1, 1, H).view(1, H, 1)
    v = torch.linspace(-1, 1, W).view(1, 1, W)
    c = (torch.rand(B, 5, generator=generator) * 2 - 1) * (max_log_amplitude / 2)
    log_field = c[:, 0, None, None] * u + c[:, 1, None, None] * v + c[:, 2, None, None] * u * v \
        + c[:, 3, None, None] * (u * u - 1 / 3) + c[:, 4, None, None] * (v * v - 1 / 3)
    return (((x + 1) / 2) * log_field.exp().unsqueeze(1)).clamp(0, 1) * 2 - 1


def augment(x: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0, max_shift_px: float = 0.0,
            gamma_range: tuple[float, float] = (0.8, 1.25), scale_range: tuple[float, float] = (1.0, 1.0),
            bias_field: float = 0.0) -> torch.Tensor:
    """Random small rotations, in-plane shifts and intensity gamma of a batch (B, 1, H, W) in [-1, 1];
    with `scale_range` an isotropic zoom (log-uniform; > 1 magnifies the heart, as a smaller pixel
    would), with `bias_field` a smooth multiplicative field (`_bias_field`). Never a flip: a mirror
    image puts the RV on the wrong side of the septum. The zoom and the field draw from `generator`
    only when on, so runs trained without them continue with the same random stream."""
    theta = training_theta(x.shape[0], generator, max_rotation_deg, max_shift_px, x.shape[-1])
    if scale_range != (1.0, 1.0):
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        zoom = torch.empty(x.shape[0]).uniform_(lo, hi, generator=generator).exp()
        theta[:, :, :2] = theta[:, :, :2] / zoom.view(-1, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if bias_field:
        out = _bias_field(out, generator, bias_field)
    return _gamma(out, generator, gamma_range)


def augment_pair(x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
                 flip_prob: float = 0.0, gamma_range: tuple[float, float] = (0.8, 1.25)
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random small rotations and gamma for images (B, 1, H, W) with their label maps (B, H, W): the
    same rotation for both (labels by nearest neighbour), gamma on the images only. `flip_prob` must
    be 0 (kept for callers that pass it; flips mirror the anatomy)."""
    theta = _random_theta(x.shape[0], generator, max_rotation_deg, flip_prob)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(labels.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border",
                        align_corners=False)
    return _gamma(out, generator, gamma_range), lab.squeeze(1).round().long()
