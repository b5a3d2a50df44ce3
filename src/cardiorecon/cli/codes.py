"""Commands on diffusion-autoencoder codes: encode, decode, sample."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import FRAMES_HELP, app, fail, parse_frames


@app.command()
def encode(study: Path = typer.Argument(..., help="Subject folder or NIfTI"),
           out: Path = typer.Option(..., "--out", help="Codes file (.safetensors or .npz)"),
           frames: str = typer.Option("all", "--frames", help=FRAMES_HELP),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           invert_steps: int = typer.Option(100, "--invert-steps", min=1)) -> None:
    """Encode every SAX slice: z_sem by the semantic encoder, x_T by DDIM inversion."""
    from cardiorecon.codes import encode_study, save_codes
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study
    from cardiorecon.models.pretrained import load_diffae

    try:
        codes = encode_study(load_diffae(weights), read_study(study), parse_frames(frames), invert_steps)
        path = save_codes(codes, out)
    except CardioReconError as exc:
        fail(exc)
    typer.echo(f"wrote {path}: z_sem {tuple(codes['z_sem'].shape)}, x_T {tuple(codes['x_T'].shape)}")


@app.command()
def decode(codes: Path = typer.Argument(..., help="Codes file written by `cardiorecon encode`"),
           out: Path = typer.Option(..., "--out", help="NIfTI to write (model grid, scanner units)"),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           decode_steps: int = typer.Option(20, "--decode-steps", min=1)) -> None:
    """Decode codes back to a volume on the model grid (the encoded slices, DDIM-decoded)."""
    from cardiorecon.codes import decode_codes, load_codes
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import write_nifti
    from cardiorecon.models.pretrained import load_diffae

    try:
        volume = decode_codes(load_diffae(weights), load_codes(codes), decode_steps)
        typer.echo(f"wrote {write_nifti(volume, out)}")
    except CardioReconError as exc:
        fail(exc)


@app.command()
def sample(out: Path = typer.Option(..., "--out", help="PNG grid to write (and NAME.nii.gz beside it)"),
           num: int = typer.Option(16, "--num", min=1),
           weights: Optional[Path] = typer.Option(None, "--weights"),
           decode_steps: int = typer.Option(20, "--decode-steps", min=1),
           latent_steps: int = typer.Option(50, "--latent-steps", min=1),
           seed: int = typer.Option(0, "--seed")) -> None:
    """Sample new SAX slices: z_sem from the latent DDIM, x_T from N(0, I), decoded by DDIM."""
    from cardiorecon.codes import sample_slices, write_sample_grid
    from cardiorecon.errors import CardioReconError
    from cardiorecon.models.pretrained import load_diffae, load_latent

    try:
        model = load_diffae(weights)
        latent = load_latent(weights)
        x = sample_slices(model, latent, num, decode_steps, latent_steps, seed)
        for p in write_sample_grid(x, out, model.config.pixel_spacing_mm):
            typer.echo(f"wrote {p}")
    except CardioReconError as exc:
        fail(exc)
