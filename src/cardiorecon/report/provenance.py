"""Provenance of a run, as plain data for the report: what data, which weights (file hashes),
the command line, the package version and git commit, the date and the machine behind the
timings and memory figures."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def file_sha256(path: str | Path, length: int = 12) -> str:
    """The first `length` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def weights_entry(role: str, stem: str | Path, model: Any = None) -> dict[str, Any]:
    """One weights record: role (e.g. 'diffae'), the config name (from STEM.json), the folder and
    file, the SHA-256 of STEM.safetensors and, given the model, its parameter count."""
    import json

    stem = Path(stem)
    entry: dict[str, Any] = {"role": role, "file": str(stem.with_suffix(".safetensors"))}
    try:
        entry["name"] = json.loads(stem.with_suffix(".json").read_text()).get("name", stem.parent.name)
    except (OSError, ValueError):
        entry["name"] = stem.parent.name
    try:
        entry["sha256"] = file_sha256(stem.with_suffix(".safetensors"))
    except OSError:
        entry["sha256"] = "unreadable"
    if model is not None and hasattr(model, "parameters"):
        entry["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return entry


def git_commit(start: Path | None = None) -> str:
    """The checkout's commit (with '+dirty' when tracked files differ), or 'unknown' outside git."""
    cwd = Path(start or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model and cores, torch threads, GPU (if torch sees one), memory, OS and Python."""
    info: dict[str, Any] = {"cpu": _cpu_name(), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                            "os": f"{platform.system()} {platform.release()}"}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def describe_data(study, protocol_note: str = "") -> dict[str, Any]:
    """One case's data as the report shows it: layout, SAX matrix, in-plane pixel and slice
    spacing, thickness, frames, LAX views and whether reference labels exist."""
    sax = study.sax
    sp = [float(s) for s in sax.spacing]
    keep = int(study.meta.get("kept_every", 1))
    return {"layout": study.meta.get("format") or "unknown", "source": str(study.meta.get("source") or ""),
            "sax_matrix": "x".join(str(int(s)) for s in sax.spatial_shape[:2]),
            "sax_slices": int(study.meta.get("original_sax_slices", sax.spatial_shape[2])),
            "pixel_mm": round(float(np.mean(sp[:2])), 3), "slice_spacing_mm": round(sp[2] / keep, 3),
            "thickness_mm": round(float(sax.slice_thickness), 3), "frames": int(study.num_frames),
            "lax_views": sorted(study.lax), "labels": study.sax_labels is not None,
            **({"note": protocol_note} if protocol_note else {})}


def collect(command: list[str] | str | None = None, data: dict[str, dict] | None = None,
            weights: list[dict] | None = None, protocol: str = "", protocol_text: str = "",
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the provenance block shows, as JSON-ready plain data."""
    from importlib import metadata

    try:
        version = metadata.version("cardiorecon")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "unknown"
    if command is None:
        command = [Path(sys.argv[0]).name] + sys.argv[1:]
    cmd = command if isinstance(command, str) else shlex.join(command)
    return {"command": cmd, "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": version, "git_commit": git_commit(), "protocol": protocol, "protocol_text": protocol_text,
            "data": data or {}, "weights": weights or [], "machine": machine(), **(extra or {})}


#: What each protocol does, in words (shown under "Provenance" and in the Markdown summary).
PROTOCOL_TEXT = {
    "phantom": ("Phantom protocol: synthetic subjects with the truth known. Each 10 mm short-axis stack is "
                "reconstructed at factor {factor} (10 mm -> {step} mm); the new slices are compared with the "
                "dense truth (SSIM, PSNR), the reconstruction is segmented and compared with the true labels "
                "(Dice, HD95) and the LV/RV ejection fraction from the ED and ES reconstructions with the true "
                "EF."),
    "slice-drop": ("Slice drop: every other acquired short-axis slice is removed and reconstructed from its "
                   "neighbours (factor 2); the reconstructed slices are compared with the removed originals "
                   "(SSIM, PSNR), and segmented slices with the reference contours where they exist "
                   "(Dice, 2D HD95)."),
    "lax-holdout": ("Leave one LAX view out: for each long-axis view in turn, LAX-guided methods are guided "
                    "by the other views only; every reconstruction (factor {factor}) is sampled on the held-out "
                    "view's plane and compared with that image where the plane crosses the stack (masked NCC "
                    "and SSIM; Dice/HD95 against the view's labels where they exist)."),
}


def protocol_text(protocol: str, factor: int | None = None) -> str:
    text = PROTOCOL_TEXT.get(protocol, protocol)
    f = factor or 5
    return text.format(factor=f, step=f"{10 / f:g}")


def from_evaluator(ev, protocol: str, factor: int | None = None, command: list[str] | str | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance of an `cardiorecon.evaluate.Evaluator` run: its cases, weights and settings."""
    import dataclasses

    settings = {}
    if dataclasses.is_dataclass(getattr(ev, "config", None)):
        settings = {"reconstruction_settings": json_ready(dataclasses.asdict(ev.config))}
    return collect(command, getattr(ev, "data", {}), getattr(ev, "weights", []), protocol,
                   protocol_text(protocol, factor), {**settings, **(extra or {})})


def json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
