"""Figure of how the views overlay: the SAX mid slice with every LAX plane's intersection line,
and each LAX view with the SAX slice lines. Lines come from the affines alone, so a wrong affine
shows as a line through the wrong anatomy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardiorecon.geometry import slice_plane, voxel_to_world
from cardiorecon.volume import Study, Volume

COLOURS = {"2ch": "tab:orange", "3ch": "tab:green", "4ch": "tab:cyan"}


def _plane_distance_map(image: Volume, k: int, plane) -> np.ndarray:
    """Signed distance (mm) of each pixel centre of slice k of `image` to `plane`, (X, Y)."""
    X, Y = image.spatial_shape[:2]
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    ijk = np.stack([ii, jj, np.full_like(ii, k)], axis=-1)
    return plane.signed_distance(voxel_to_world(image.affine, ijk))


def _show(ax, img2d: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(img2d, [1, 99.5])
    # Transposed so that i runs left to right and j top to bottom, as viewers show them.
    ax.imshow(img2d.T, cmap="gray", vmin=lo, vmax=hi, origin="upper")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def overlay_figure(study: Study, out: str | Path, frame: int = 0) -> Path:
    """Write a PNG: SAX mid slice with LAX intersection lines; each LAX with SAX slice lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(study.lax)
    fig, axes = plt.subplots(1, 1 + len(views), figsize=(4 * (1 + len(views)), 4.4))
    axes = np.atleast_1d(axes)
    sax = study.sax
    k = sax.spatial_shape[2] // 2
    _show(axes[0], sax.data[:, :, k, frame], f"SAX slice {k} (frame {frame})")
    for v in views:
        d = _plane_distance_map(sax, k, slice_plane(study.lax[v]))
        axes[0].contour(d.T, levels=[0.0], colors=COLOURS.get(v, "tab:red"), linewidths=1.2)
        axes[0].plot([], [], color=COLOURS.get(v, "tab:red"), label=v)
    if views:
        axes[0].legend(loc="lower right", fontsize=8)
    for ax, v in zip(axes[1:], views):
        lax = study.lax[v]
        t = min(frame, lax.num_frames - 1)
        _show(ax, lax.data[:, :, 0, t], f"LAX {v} with SAX slices")
        for kk in range(sax.spatial_shape[2]):
            d = _plane_distance_map(lax, 0, slice_plane(sax, kk))
            if d.min() < 0 < d.max():
                ax.contour(d.T, levels=[0.0], colors="yellow", linewidths=0.6, alpha=0.8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
