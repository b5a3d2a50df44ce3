"""What a study needs before any method runs, computed once from its images and frozen (issue 24).

A `Plan` holds the heart region, the working grid (pixel spacing and size), the breath-hold
alignment (per-slice shifts, optional LAX offsets), the SAX -> LAX phase pairing of every view and
the ED/ES frames. It is computed from the images alone (never from reference labels: nnU-Net's
fingerprint and plans), written as `plan.json` beside every output, and read back to reproduce a
reconstruction exactly (`--plan FILE`). Every method and command takes it; none recomputes it.

Order of the computation (each step sees the previous ones):
1. phase pairing (`cardiorecon.phase`): the LAX frame of the same cardiac phase per SAX frame;
2. alignment (`cardiorecon.align`), which compares each SAX frame with its paired LAX frame;
3. the heart region (`preprocess.heart_region`) on the study with the LAX views at their aligned place;
4. the working grid: `grid_spacing_mm` pixels, at least `grid_size` and enough to hold the region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cardiorecon.align import Alignment, offset_views, resolve_alignment
from cardiorecon.errors import InputError
from cardiorecon.phase import apply_pairing, phase_pairing
from cardiorecon.preprocess import HeartRegion, grid_size_for, heart_region
from cardiorecon.volume import Study

PLAN_FILE = "plan.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """One study's plan. `phase_pairing[view][t]` is the LAX frame paired with SAX frame t;
    `alignment` is None where the SAX slices are used as acquired."""

    subject: str
    sax_shape: tuple[int, ...]  # (X, Y, Z, T) of the SAX the plan was made for
    heart_region: HeartRegion
    grid_spacing_mm: float
    grid_size: int  # pixels of the square working grid (holds the heart region)
    alignment: Alignment | None
    phase_pairing: dict[str, tuple[int, ...]] = field(default_factory=dict)
    pairing_rules: dict[str, str] = field(default_factory=dict)
    ed_frame: int | None = None
    es_frame: int | None = None

    # ----- using it -----
    def check(self, study: Study) -> None:
        """Refuse a plan made for another study (other SAX shape, or a paired view it lacks)."""
        source = study.meta.get("source")
        shape = tuple(int(s) for s in (study.sax.shape if study.sax.data.ndim == 4 else (*study.sax.shape, 1)))
        if shape != tuple(self.sax_shape):
            raise InputError(source, f"the plan was made for a SAX of shape {tuple(self.sax_shape)}, this one is {shape}")
        missing = sorted(set(self.phase_pairing) - set(study.lax))
        if missing:
            raise InputError(source, f"the plan pairs LAX view(s) {missing} that this study does not have")

    def apply(self, study: Study) -> Study:
        """The study as the plan sees it: every LAX view (and its labels) carries its phase pairing
        (set in place, as the reader of older versions did), and the LAX views are moved by the
        alignment's estimated offsets (affines only; images untouched)."""
        self.check(study)
        apply_pairing(study, {n: (list(p), self.pairing_rules.get(n, "")) for n, p in self.phase_pairing.items()})
        return offset_views(study, self.alignment)

    @property
    def sax_shifts_mm(self) -> np.ndarray | None:
        return None if self.alignment is None else self.alignment.sax_shifts_mm

    def lax_frame_index(self, view: str, t: int) -> int:
        """The LAX frame of `view` paired with SAX frame t."""
        return int(self.phase_pairing[view][t])

    # ----- on disk -----
    def to_json(self) -> dict:
        """Everything needed to reproduce the plan exactly (shifts at full precision)."""
        alignment = None
        if self.alignment is not None:
            alignment = {**self.alignment.to_json(),
                         "sax_shifts_mm": np.asarray(self.alignment.sax_shifts_mm, np.float64).tolist()}
        return {"version": PLAN_VERSION, "subject": self.subject, "sax_shape": list(self.sax_shape),
                "heart_region": self.heart_region.to_json(),
                "working_grid": {"spacing_mm": float(self.grid_spacing_mm), "size": int(self.grid_size)},
                "alignment": alignment,
                "phase_pairing": {n: {"lax_frames": [int(i) for i in p], "rule": self.pairing_rules.get(n, "")}
                                  for n, p in self.phase_pairing.items()},
                "ed_frame": self.ed_frame, "es_frame": self.es_frame}

    @classmethod
    def from_json(cls, data: dict, source=None) -> "Plan":
        try:
            if int(data.get("version", 0)) != PLAN_VERSION:
                raise InputError(source, f"plan version {data.get('version')!r} is not {PLAN_VERSION}")
            region = data["heart_region"]
            pairing = data.get("phase_pairing", {})
            return cls(subject=str(data.get("subject", "")), sax_shape=tuple(int(s) for s in data["sax_shape"]),
                       heart_region=HeartRegion(np.asarray(region["centre_mm"], np.float64), float(region["size_mm"]),
                                                str(region["source"]), tuple(region.get("notes", ()))),
                       grid_spacing_mm=float(data["working_grid"]["spacing_mm"]),
                       grid_size=int(data["working_grid"]["size"]),
                       alignment=None if data.get("alignment") is None else Alignment.from_json(data["alignment"]),
                       phase_pairing={n: tuple(int(i) for i in p["lax_frames"]) for n, p in pairing.items()},
                       pairing_rules={n: str(p.get("rule", "")) for n, p in pairing.items()},
                       ed_frame=data.get("ed_frame"), es_frame=data.get("es_frame"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(source, f"not a cardiorecon plan: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> str:
        """The plan in words, one fact a line."""
        r = self.heart_region
        lines = [f"plan of {self.subject or 'the study'}: SAX {' x '.join(map(str, self.sax_shape))} (X, Y, Z, T)",
                 f"heart region: a {r.size_mm:.0f} mm square centred at ({', '.join(f'{c:.1f}' for c in r.centre)}) "
                 f"mm, from {r.source}",
                 f"working grid: {self.grid_size} x {self.grid_size} pixels of {self.grid_spacing_mm:g} mm "
                 f"({self.grid_size * self.grid_spacing_mm:.0f} mm)"]
        lines += [f"  note: {n}" for n in r.notes]
        if self.alignment is None:
            lines.append("alignment: none (the SAX slices as acquired)")
        else:
            a = self.alignment
            shifts = np.asarray(a.sax_shifts_mm, float)
            rms = float(np.sqrt((shifts ** 2).sum(1).mean())) if shifts.size else 0.0
            largest = float(np.abs(shifts).max()) if shifts.size else 0.0
            lines.append(f"alignment to LAX {', '.join(a.lax_views) or 'no view'}: {len(shifts)} slice shifts, "
                         f"RMS {rms:.2f} mm, largest {largest:.2f} mm; intersection NCC "
                         f"{a.mean_ncc('before'):.3f} -> {a.mean_ncc('after'):.3f}")
            offsets = {k: v for k, v in a.lax_offsets_mm.items() if v}
            if offsets:
                lines.append("  LAX offsets along their normals: " + ", ".join(f"{k} {v:+.2f} mm" for k, v in offsets.items()))
            lines += [f"  note: {n}" for n in a.notes]
        for name, pairing in self.phase_pairing.items():
            lines.append(f"phase pairing {name}: SAX frame t -> LAX frame {list(pairing)} "
                         f"({self.pairing_rules.get(name) or 'stored'})")
        if not self.phase_pairing:
            lines.append("phase pairing: no LAX view")
        ed = "unknown" if self.ed_frame is None else str(self.ed_frame)
        es = "unknown" if self.es_frame is None else str(self.es_frame)
        lines.append(f"ED frame {ed}, ES frame {es}")
        return "\n".join(lines)


def make_plan(study: Study, grid_spacing_mm: float, grid_size: int, align: str | Alignment | None = "off",
              lax_views: list[str] | None = None) -> Plan:
    """The plan of `study` from its images alone.

    grid_spacing_mm, grid_size: the working grid's pixel size and smallest side (a model's own, or
    the tiny model's for methods without weights). align: 'auto' | 'on' | 'off' or an `Alignment`
    (used as given), estimated with `lax_views` (default all)."""
    pairing = phase_pairing(study)
    apply_pairing(study, pairing)  # the alignment compares each SAX frame with its paired LAX frame
    alignment = resolve_alignment(study, align, lax_views)
    region = heart_region(offset_views(study, alignment))
    size = grid_size_for(region, grid_spacing_mm, grid_size)
    shape = study.sax.shape if study.sax.data.ndim == 4 else (*study.sax.shape, 1)
    return Plan(subject=str(study.meta.get("subject") or Path(str(study.meta.get("source") or "")).name),
                sax_shape=tuple(int(s) for s in shape), heart_region=region,
                grid_spacing_mm=float(grid_spacing_mm), grid_size=int(size), alignment=alignment,
                phase_pairing={n: tuple(int(i) for i in p) for n, (p, _) in pairing.items()},
                pairing_rules={n: rule for n, (_, rule) in pairing.items()},
                ed_frame=study.ed_frame, es_frame=study.es_frame)


def write_plan(plan: Plan, folder: str | Path) -> Path:
    """plan.json in `folder` (atomic)."""
    from cardiorecon.io.nifti import atomic_write, json_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json_text(plan.to_json())  # an alignment NCC without lines is null, not NaN (invalid JSON)
    return atomic_write(folder / PLAN_FILE, lambda tmp: Path(tmp).write_text(text), suffix=".json")


def read_plan(path: str | Path) -> Plan:
    """A plan written by `write_plan` (a plan.json file, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_FILE
    if not path.is_file():
        raise InputError(path, "no such plan file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the plan: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(path, "not a cardiorecon plan: expected a JSON object")
    return Plan.from_json(data, source=path)


def with_grid(plan: Plan, grid_spacing_mm: float, grid_size: int) -> Plan:
    """The plan on another working grid (same region, alignment and pairing)."""
    return replace(plan, grid_spacing_mm=float(grid_spacing_mm),
                   grid_size=grid_size_for(plan.heart_region, grid_spacing_mm, grid_size))


__all__ = ["PLAN_FILE", "Plan", "make_plan", "read_plan", "with_grid", "write_plan"]
