"""Saved DiffAE codes of a study (`cardiorecon encode` / `decode`) and sampling new slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cardiorecon.autoencoder import decode, encode, prepare_study, slices_to_volume, volume_to_slices
from cardiorecon.diffusion import NoiseSchedule, ddim_sample
from cardiorecon.errors import InputError
from cardiorecon.io.nifti import atomic_write
from cardiorecon.models.config import config_to_json
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.latent import LatentMLP
from cardiorecon.preprocess import IntensityMap
from cardiorecon.volume import Study, Volume


def encode_study(model: DiffAE, study: Study, frames="all", invert_steps: int = 100) -> dict:
    """Codes of every SAX slice of the chosen frames, with the geometry to decode them in place."""
    grid = prepare_study(study, model.config.pixel_spacing_mm, model.config.image_size)
    frame_list = study.resolve_frames(frames)
    data = grid.image.data[..., frame_list]
    z, x_T = encode(model, volume_to_slices(data), invert_steps, progress=True)
    return {"z_sem": z, "x_T": x_T, "affine": grid.image.affine, "num_slices": data.shape[2],
            "frames": frame_list, "intensity": [grid.intensity.offset, grid.intensity.scale],
            "config": config_to_json(model.config), "invert_steps": invert_steps,
            "source": str(study.meta.get("source"))}


def save_codes(codes: dict, path: str | Path) -> Path:
    """.safetensors (tensors + JSON metadata) or .npz (arrays + a JSON string)."""
    path = Path(path)
    meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in codes.items() if k not in ("z_sem", "x_T")}
    if path.suffix == ".npz":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, z_sem=codes["z_sem"].numpy(), x_T=codes["x_T"].numpy(), meta=json.dumps(meta))
        return atomic_write(path, write, suffix=".npz")
    if path.suffix != ".safetensors":
        raise InputError(path, "codes file must end in .safetensors or .npz")
    from safetensors.torch import save_file

    tensors = {"z_sem": codes["z_sem"].contiguous(), "x_T": codes["x_T"].contiguous()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)}),
                        suffix=".safetensors")


def load_codes(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "codes file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as d:
                meta = json.loads(str(d["meta"]))
                tensors = {"z_sem": torch.from_numpy(d["z_sem"]), "x_T": torch.from_numpy(d["x_T"])}
        else:
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("meta", "{}"))
            tensors = load_file(str(path))
    except Exception as exc:  # junk, truncated, a pickle (never unpickled), another program's arrays
        raise InputError(path, f"not a codes file written by `cardiorecon encode` ({type(exc).__name__}: "
                               f"{str(exc)[:120]})") from exc
    if not isinstance(meta, dict) or "affine" not in meta or not {"z_sem", "x_T"} <= set(tensors):
        raise InputError(path, "not a codes file written by `cardiorecon encode`")
    return {**meta, **tensors, "affine": np.array(meta["affine"])}


def decode_codes(model: DiffAE, codes: dict, decode_steps: int = 20) -> Volume:
    """The volume (X, Y, Z, T) in scanner units, on the grid the codes were encoded on."""
    if codes["config"] != json.loads(json.dumps(config_to_json(model.config))):
        raise InputError(None, "these codes were made by a DiffAE with another config")
    x = decode(model, codes["z_sem"], codes["x_T"], decode_steps, progress=True)
    imap = IntensityMap(*codes["intensity"])
    return Volume(imap.inverse(slices_to_volume(x, codes["num_slices"])), codes["affine"],
                  {"frames": codes["frames"]})


@torch.no_grad()
def sample_slices(model: DiffAE, latent: LatentMLP, num: int, decode_steps: int = 20, latent_steps: int = 50,
                  seed: int = 0) -> torch.Tensor:
    """New slices (num, 1, H, W) in [-1, 1]: z_sem from the latent DDIM, x_T ~ N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    z_T = torch.randn(num, latent.config.z_dim, generator=g)
    schedule = NoiseSchedule.linear(latent.config.num_timesteps)
    zn = ddim_sample(lambda z, t, c: latent(z, t), z_T, schedule, latent_steps, clip_x0=False)
    z = latent.denormalise(zn)
    x_T = torch.randn(num, 1, size, size, generator=g)
    return ddim_sample(model.eps, x_T, NoiseSchedule.linear(model.config.num_timesteps), decode_steps, cond=z)


def write_sample_grid(x: torch.Tensor, out: str | Path, spacing_mm: float) -> list[Path]:
    """A PNG grid of the slices and a NIfTI stack (X, Y, N) with `spacing_mm` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiorecon.io.nifti import write_nifti

    out = Path(out)
    n = len(x)
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        axes.flat[i].imshow(x[i, 0].T.numpy(), cmap="gray", vmin=-1, vmax=1)
    fig.tight_layout()
    png = atomic_write(out.with_suffix(".png"), lambda tmp: fig.savefig(tmp, dpi=90), suffix=".png")
    plt.close(fig)
    stack = Volume(x[:, 0].permute(1, 2, 0).numpy(), np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0]))
    return [png, write_nifti(stack, out.with_suffix(".nii.gz"))]
