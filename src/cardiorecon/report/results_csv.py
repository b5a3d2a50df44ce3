"""The evaluation results table (results.csv): its columns, one row per case, method, frame and
structure, written by `cardiorecon evaluate` and read back by `cardiorecon report`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from cardiorecon.io.nifti import write_csv_rows

COLUMNS = ["protocol", "case", "method", "frame", "structure", "dice", "hd95", "ssim", "psnr", "ncc",
           "volume_ml", "true_volume_ml", "ef", "true_ef", "ef_error", "seconds", "peak_mb", "note"]
#: Pseudo-method: the segmentation network applied to the true dense image (its own error alone).
TRUTH_IMAGE = "truth-image"


def write_csv(rows: list[dict], path: Path) -> Path:
    """results.csv; a NaN (an undefined score: an empty mask's HD95, no value) is an empty cell."""
    def clean(r: dict) -> dict:
        return {k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}

    return write_csv_rows(path, [clean(r) for r in rows], COLUMNS)


def read_csv(paths: list[Path]) -> list[dict]:
    """Rows of one or more results.csv files (numbers back as floats, empty cells as '')."""
    from cardiorecon.errors import InputError

    rows = []
    for path in paths:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                fh.read(65536)  # a PNG or any binary file ends here, with one line naming it
        except UnicodeDecodeError:
            raise InputError(path, "not a text file: give the results.csv that `cardiorecon evaluate` wrote") from None
        except OSError as exc:
            raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != COLUMNS:
                raise InputError(path, f"not a cardiorecon results.csv (columns {reader.fieldnames})")
            for n, r in enumerate(reader, start=2):
                for k in COLUMNS[5:-1]:
                    try:
                        r[k] = float(r[k]) if r[k] != "" else ""
                    except (TypeError, ValueError):
                        from cardiorecon.errors import InputError

                        raise InputError(path, f"line {n}: column {k!r} must be a number, got {r[k]!r}") from None
                rows.append(r)
    return rows


def read_failures(path: Path) -> list[dict]:
    """{case, error} rows of a failures CSV (columns case and error; others ignored)."""
    from cardiorecon.errors import InputError

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{"case": r.get("case", ""), "error": r.get("error", "")} for r in csv.DictReader(fh)]
    except UnicodeDecodeError:
        raise InputError(path, "not a text file: give a CSV with columns case and error") from None


__all__ = ["COLUMNS", "TRUTH_IMAGE", "read_csv", "read_failures", "write_csv"]
