"""The LAX forward operator (DESIGN.md section 5): sample a dense SAX volume on a LAX plane.

Each LAX pixel centre p = B (i, j, 0, 1), moved across the slice thickness by a few offsets along
the plane normal, maps to the fractional SAX voxel A^-1 p; the volume is sampled there with
trilinear interpolation (torch grid_sample: differentiable) and the samples averaged. A pixel is
valid where every sample falls inside the volume. Only the affines are used, so the operator
works on any grid (e.g. the model grid after crop and resample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.geometry import voxel_to_world, world_to_voxel
from cardiorecon.volume import Volume


def thickness_offsets(thickness_mm: float, num_samples: int) -> np.ndarray:
    """Offsets (mm) of `num_samples` points spread evenly across a box profile."""
    n = max(1, int(num_samples))
    return (np.arange(n) - (n - 1) / 2) * (thickness_mm / n)


@dataclass
class LaxOperator:
    """Sampling of volumes on the grid (volume_affine, volume_shape) along one LAX plane.

    Attributes: grid (1, S, H, W, 3) for grid_sample, valid (H, W) bool, the view's shape.
    """

    grid: torch.Tensor
    valid: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def build(cls, volume_affine: np.ndarray, volume_shape: tuple[int, int, int], lax_affine: np.ndarray,
              lax_shape: tuple[int, int], thickness_mm: float = 6.0, num_samples: int = 3) -> "LaxOperator":
        H, W = lax_shape
        ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        centres = voxel_to_world(lax_affine, np.stack([ii, jj, np.zeros_like(ii)], -1))  # (H, W, 3)
        normal = np.cross(lax_affine[:3, 0], lax_affine[:3, 1])
        normal /= np.linalg.norm(normal)
        offsets = thickness_offsets(thickness_mm, num_samples)
        pts = centres[None] + offsets[:, None, None, None] * normal  # (S, H, W, 3)
        vox = world_to_voxel(volume_affine, pts)
        size = np.array(volume_shape, dtype=float)
        tol = 1e-6
        inside = np.all((vox >= -tol) & (vox <= size - 1 + tol), axis=-1).all(axis=0)
        # grid_sample with align_corners=True: -1 and 1 are the first and last voxel centres.
        norm = 2 * vox / np.maximum(size - 1, 1) - 1
        # The input is (1, 1, X, Y, Z) = (N, C, D, H, W): the grid's last axis is ordered (W, H, D).
        grid = torch.from_numpy(norm[..., ::-1].copy()).float()[None]
        return cls(grid=grid, valid=torch.from_numpy(inside), shape=(H, W))

    @classmethod
    def for_view(cls, volume_affine: np.ndarray, volume_shape: tuple[int, int, int], view: Volume,
                 num_samples: int = 3) -> "LaxOperator":
        return cls.build(volume_affine, volume_shape, view.affine, view.spatial_shape[:2], view.slice_thickness,
                         num_samples)

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def sample(self, volume: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Sample (X, Y, Z) on the plane -> (H, W), averaged across the thickness.

        mode 'bilinear' is trilinear in 3D; 'nearest' for label maps (uses the centre sample).
        """
        v = volume.float()[None, None]
        grid = self.grid.to(v.device)
        if mode == "nearest":
            middle = grid.shape[1] // 2
            centre = grid[:, middle:middle + 1]  # (1, 1, H, W, 3): the plane itself
            return F.grid_sample(v, centre, mode="nearest", align_corners=True)[0, 0, 0]
        out = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=True)  # (1,1,S,H,W)
        return out[0, 0].mean(0)


def match_intensity(reference: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Least-squares gain and offset (detached) mapping `reference` onto `target` inside `mask`."""
    r, t = reference[mask].detach().float(), target[mask].detach().float()
    if r.numel() < 2:
        return reference
    rc = r - r.mean()
    gain = (rc * (t - t.mean())).sum() / rc.square().sum().clamp_min(1e-8)
    return gain * (reference - r.mean()) + t.mean()


def lax_loss(operator: LaxOperator, volume: torch.Tensor, lax_image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference on valid pixels between the volume sampled on the plane and the
    LAX image, after matching the LAX intensities to the samples; exactly 0 with no valid pixel."""
    if operator.num_valid == 0:
        return volume.sum() * 0.0
    pred = operator.sample(volume)
    mask = operator.valid.to(pred.device)
    ref = match_intensity(lax_image.to(pred.device), pred, mask)
    return (pred - ref)[mask].square().mean()
