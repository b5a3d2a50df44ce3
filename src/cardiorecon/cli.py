"""The `cardiorecon` console script: thin typer commands over library functions.

Heavy imports (torch, the readers) happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views.")


@app.callback()
def _root() -> None:
    """Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views."""


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command()
def info(path: Path = typer.Argument(..., help="Subject folder (UK Biobank, M&Ms-2, ACDC, DICOM) or NIfTI file"),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text")) -> None:
    """Print each view's shape, frames, spacing, thickness, orientation and LAX geometry."""
    from cardiorecon.describe import describe_study, format_description
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io import read_study

    try:
        description = describe_study(read_study(path))
    except CardioReconError as exc:
        _fail(exc)
    typer.echo(json.dumps(description, indent=2) if as_json else format_description(description))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
