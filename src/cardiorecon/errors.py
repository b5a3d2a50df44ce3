"""Exceptions raised on bad input: each names the file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class CardioReconError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(CardioReconError):
    """An input file or folder cannot be used; the message names it and says why."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class OutputError(CardioReconError):
    """An output cannot be written (for example it would overwrite an input)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigMismatchError(CardioReconError):
    """Weights and their configuration do not belong together."""


class GeometryWarning(UserWarning):
    """An image's geometry is doubtful (no sform/qform code, a qform that cannot hold the affine):
    the message names the file and says what was done about it."""


class NumericalError(CardioReconError):
    """A computation produced NaN or infinite values where it needs finite ones."""


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as one line for people: `warning: <message>` (the message names the file it is about),
    without Python's source file, line number and source line; a warning of another kind than
    UserWarning says its kind."""
    text = " ".join(str(message).split())
    kind = "" if issubclass(category, UserWarning) and category.__module__ in ("builtins", __name__) \
        else f" [{category.__name__}]"
    return f"warning: {text}{kind}\n"


def use_one_line_warnings() -> None:
    """Show every warning as `warning_line` (the console script does this; libraries keep Python's
    format). Recording warnings (pytest, warnings.catch_warnings(record=True)) is unaffected."""
    import warnings

    warnings.formatwarning = warning_line
