"""The `cardiorecon` console script: thin typer commands over library functions, a module per group.

Heavy imports (torch, the readers) happen inside the commands so that `--help` is instant.
Importing a command module adds its commands to `app`; the order below is the order of `--help`.
"""

from cardiorecon.cli.app import app, main
from cardiorecon.cli import data, training, segmentation, reconstruction, plan, evaluation, cohort, codes  # noqa: F401,E402

__all__ = ["app", "main"]
