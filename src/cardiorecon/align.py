"""Breath-hold alignment of the SAX slices to the LAX views (issue 13).

Every SAX slice and every LAX view is acquired in its own breath-hold, so they do not meet where
the headers say. This module estimates one in-plane translation per SAX slice (the same for all
frames: a slice is one breath-hold) from the agreement of the images along every SAX-LAX
intersection line; the LAX views are the reference frame.

Convention (the phantom's, `phantom.acquire.grid_points`): `sax_shifts_mm[k] = (d_row, d_col)` is
the shift, in mm along the SAX voxel axes i and j, that the acquisition applied to slice k: voxel
(i, j, k) shows the anatomy at A (i, j, k) + d_row u_i + d_col u_j. On a phantom made with
`--breath-hold` the estimate equals `breath_hold_shifts_mm` of subject.json; the correction samples
each slice from that shifted position (`geometry.shift_slices`, `geometry.resample_inplane`).

Along each line the SAX slice is sampled averaged across the LAX slab and the LAX view averaged
across the SAX slab (both slabs' traces on the other plane), every SAX frame paired with the LAX
frame of the same cardiac phase (`phase.lax_frame`: the plan's pairing). The objective

    sum over lines of (1 - NCC over all frames and points) + smoothness * sum_k |s_k - s_k+1|^2
                                                          + prior * sum_k |s_k|^2

is chain-structured (one shift per slice, neighbours coupled), so it is minimised exactly on a
grid by dynamic programming: a coarse 1 mm grid over the whole bounded square (global: finds 8 mm
shifts), then finer grids around each slice's estimate (sub-voxel: 0.5 mm, then 0.125 mm).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.errors import InputError
from cardiorecon.geometry import plane_intersection, shift_slices, slice_plane, world_to_voxel
from cardiorecon.phase import lax_frame, pair_lax_frames
from cardiorecon.volume import PAIRING, Study, Volume


@dataclass(frozen=True)
class AlignConfig:
    """Settings of the alignment search (mm unless stated)."""

    bound_mm: float = 10.0  # shifts are searched in [-bound, bound]^2
    coarse_step_mm: float = 1.0
    fine_steps_mm: tuple[float, ...] = (0.5, 0.125)  # each refines +-fine_reach steps of the previous one
    fine_reach: float = 1.0  # measured on hf_1002/hf_1004: same errors as 1.5 (0.33, 0.35 mm), half the candidates
    # The coarse search uses every `coarse_point_stride`-th line sample, at most `coarse_frames`
    # frames spread over the cycle and the middle of the LAX slab (the fine ones use everything).
    coarse_point_stride: int = 2
    coarse_frames: int = 8
    line_step_mm: float = 1.0  # sample spacing along an intersection line
    radius_mm: float = 70.0  # keep line samples within this distance of the heart centre
    thickness_samples: int = 3  # samples across each slab
    # Weights per mm^2 of the difference between neighbouring slices' shifts, and of the shift itself
    # (a weak pull toward no shift where the data say little). Measured on phantom hf_1000 with
    # breath-hold shifts (independent per slice): 1e-3 / 5e-4 shrank the estimates (RMS error 0.40 mm),
    # 1e-4 / 1e-4 did not (0.10 mm; 0 / 0: 0.09 mm).
    smoothness: float = 1e-4
    prior: float = 1e-4
    min_points: int = 12  # lines with fewer valid samples are not used
    max_slab_factor: float = 2.0  # a slab's trace on an oblique plane is capped at this x its thickness
    # Optional offset of each LAX view along its normal (its own breath-hold), with two or more views:
    # searched in [-offset_bound, offset_bound] alternately with the SAX shifts, `offset_prior` per mm^2.
    # The part of the offsets that equals a common SAX shift is left to the SAX shifts (the views
    # stay the reference frame).
    lax_offsets: bool = False
    offset_bound_mm: float = 6.0
    offset_prior: float = 1e-3
    offset_rounds: int = 2


@dataclass
class Alignment:
    """Estimated breath-hold shifts of one study.

    sax_shifts_mm: (Z, 2) float, (d_row, d_col) per SAX slice (see the module docstring).
    lax_views: the views the estimate used. lax_offsets_mm: offset of each view along its normal
    (0 unless `AlignConfig.lax_offsets`). lines: one dict per intersection line used,
    with the slice, the view, the number of samples and the NCC before and after.
    """

    sax_shifts_mm: np.ndarray
    lax_views: list[str]
    lax_offsets_mm: dict[str, float] = field(default_factory=dict)
    lines: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    config: AlignConfig = AlignConfig()

    @property
    def is_identity(self) -> bool:
        return not np.any(self.sax_shifts_mm)

    def mean_ncc(self, which: str = "after") -> float:
        values = [line[f"ncc_{which}"] for line in self.lines]
        return float(np.mean(values)) if values else float("nan")

    def to_json(self) -> dict:
        return {"sax_shifts_mm": np.round(self.sax_shifts_mm, 4).tolist(), "lax_views": list(self.lax_views),
                "lax_offsets_mm": {k: float(v) for k, v in self.lax_offsets_mm.items()},
                "lines": self.lines, "mean_ncc_before": self.mean_ncc("before"),
                "mean_ncc_after": self.mean_ncc("after"), "seconds": self.seconds, "notes": list(self.notes),
                "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_json(cls, data: dict) -> "Alignment":
        cfg = dict(data.get("config", {}))
        if "fine_steps_mm" in cfg:
            cfg["fine_steps_mm"] = tuple(cfg["fine_steps_mm"])
        return cls(np.asarray(data["sax_shifts_mm"], dtype=np.float64).reshape(-1, 2), list(data["lax_views"]),
                   dict(data.get("lax_offsets_mm", {})), list(data.get("lines", [])), float(data.get("seconds", 0)),
                   list(data.get("notes", [])), AlignConfig(**cfg))


@dataclass
class _Line:
    """One SAX slice x LAX view intersection, ready to score shifts of slice k."""

    k: int
    view: str
    sax_ij: np.ndarray  # (S, n, 2) SAX in-plane voxel coordinates at zero shift
    lax: np.ndarray  # (T, n) LAX samples, slab-averaged, paired by phase with the SAX frames
    # (d_row, d_col) mm: the view's normal projected on the SAX plane. The view moved by `offset`
    # along its normal shows, at its header pixels, what the SAX slice holds at shift -offset * normal_ij.
    normal_ij: np.ndarray = field(default_factory=lambda: np.zeros(2))


def _slab_offsets(thickness_mm: float, sin_angle: float, cfg: AlignConfig) -> np.ndarray:
    """Offsets (mm) across a slab's trace (width thickness / sin(angle), capped) on the other plane."""
    width = min(thickness_mm / max(sin_angle, 1e-3), cfg.max_slab_factor * thickness_mm)
    n = max(1, cfg.thickness_samples)
    return (np.arange(n) - (n - 1) / 2) * (width / n)


def _sample_frames(frames: torch.Tensor, ij: np.ndarray) -> torch.Tensor:
    """Bilinear samples of frames (T, X, Y) at voxel coordinates ij (..., 2) -> (T, ...)."""
    T, X, Y = frames.shape
    flat = torch.from_numpy(np.ascontiguousarray(ij.reshape(-1, 2), dtype=np.float32))
    grid = torch.stack([2 * flat[:, 1] / max(Y - 1, 1) - 1, 2 * flat[:, 0] / max(X - 1, 1) - 1], -1)
    out = F.grid_sample(frames[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0].reshape((T,) + ij.shape[:-1])


def _lines(study: Study, views: list[str], cfg: AlignConfig) -> list[_Line]:
    """Every usable intersection line of an SAX slice with a LAX view, with the LAX side sampled."""
    from cardiorecon.preprocess import heart_centre

    missing_pairing = [v for v in views if v in study.lax and PAIRING not in study.lax[v].meta]
    if missing_pairing:  # no plan paired the phases yet (`plan.make_plan` does so first)
        pair_lax_frames(study)
    sax = study.sax
    X, Y, Z, T = sax.shape
    px = sax.spacing[:2]
    margin = cfg.bound_mm / px + 1.0  # a shifted sample must stay inside the slice
    centre, _ = heart_centre(study)
    out = []
    for v in views:
        view = study.lax[v]
        lax_frames = torch.from_numpy(np.stack([lax_frame(view, t, T) for t in range(T)]).astype(np.float32))
        n_lax = view.slice_normal
        LX, LY = view.spatial_shape[:2]
        for k in range(Z):
            plane = slice_plane(sax, k)
            try:
                point, d = plane_intersection(plane, slice_plane(view))
            except ValueError:
                continue
            sin_angle = float(np.linalg.norm(np.cross(plane.normal, n_lax)))
            c = centre - plane.signed_distance(centre) * plane.normal
            t0 = float((c - point) @ d)
            s = t0 + np.arange(-cfg.radius_mm, cfg.radius_mm + 1e-9, cfg.line_step_mm)
            foot = point + s[:, None] * d
            keep = np.linalg.norm(foot - c, axis=1) <= cfg.radius_mm
            u = np.cross(plane.normal, d)  # in the SAX plane, across the line
            w = np.cross(n_lax, d)  # in the LAX plane, across the line
            a = _slab_offsets(view.slice_thickness, sin_angle, cfg)
            b = _slab_offsets(sax.slice_thickness, sin_angle, cfg)
            sax_pts = foot[None] + a[:, None, None] * u  # (S, n, 3)
            lax_pts = foot[None] + b[:, None, None] * w
            sax_ij = world_to_voxel(sax.affine, sax_pts)[..., :2]
            lax_ij = world_to_voxel(view.affine, lax_pts)[..., :2]
            keep &= np.all((sax_ij >= margin) & (sax_ij <= np.array([X, Y]) - 1 - margin), axis=(0, 2))
            keep &= np.all((lax_ij >= 0) & (lax_ij <= np.array([LX, LY]) - 1), axis=(0, 2))
            if keep.sum() < cfg.min_points:
                continue
            lax = _sample_frames(lax_frames, lax_ij[:, keep]).mean(1).numpy()  # (T, n)
            if lax.std() < 1e-6:
                continue
            inplane = n_lax - (n_lax @ plane.normal) * plane.normal
            normal_ij = np.array([inplane @ sax.directions[:, 0], inplane @ sax.directions[:, 1]])
            out.append(_Line(k, v, sax_ij[:, keep], lax, normal_ij))
    return out


def _ncc(sax: torch.Tensor, lax: torch.Tensor) -> torch.Tensor:
    """NCC of candidates' SAX samples (C, T, n) with the LAX samples (T, n), over frames and points."""
    a = sax.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = lax.flatten()
    b = b - b.mean()
    return (a @ b) / (a.norm(dim=1) * b.norm()).clamp_min(1e-8)


def _line_ncc(line: _Line, slice_frames: torch.Tensor, candidates_mm: np.ndarray, px: np.ndarray,
              point_stride: int = 1, frames: np.ndarray | None = None, coarse: bool = False) -> np.ndarray:
    """NCC of one line for every candidate shift (C, 2) mm of its slice -> (C,), optionally on every
    `point_stride`-th sample, on some `frames` only and (`coarse`) without the slab average."""
    sax_ij, lax = line.sax_ij[:, ::point_stride], line.lax[:, ::point_stride]
    if coarse:  # the middle of the LAX slab's trace only
        middle = sax_ij.shape[0] // 2
        sax_ij = sax_ij[middle:middle + 1]
    if frames is not None:
        slice_frames, lax = slice_frames[frames], lax[frames]
    ij = sax_ij[None] - (candidates_mm / px)[:, None, None, :]  # (C, S, n, 2)
    samples = _sample_frames(slice_frames, ij).mean(2)  # (T, C, n)
    return _ncc(samples.permute(1, 0, 2), torch.from_numpy(np.ascontiguousarray(lax))).numpy()


def _chain_minimum(unary: list[np.ndarray], candidates: list[np.ndarray], smoothness: float) -> np.ndarray:
    """Exact minimiser over one candidate per slice of sum_k unary_k + smoothness |c_k - c_k+1|^2
    (Viterbi on the chain of slices); returns the chosen index per slice."""
    Z = len(unary)
    cost = unary[0].copy()
    back = []
    for k in range(1, Z):
        pair = smoothness * ((candidates[k - 1][:, None, :] - candidates[k][None, :, :]) ** 2).sum(-1)
        total = cost[:, None] + pair  # (C_prev, C_k)
        back.append(total.argmin(0))
        cost = total.min(0) + unary[k]
    idx = np.zeros(Z, int)
    idx[-1] = int(cost.argmin())
    for k in range(Z - 1, 0, -1):
        idx[k - 1] = back[k - 1][idx[k]]
    return idx


def _square(step: float, half_width: float) -> np.ndarray:
    r = np.arange(-half_width, half_width + 1e-9, step)
    return np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def estimate_alignment(study: Study, lax_views: list[str] | None = None, config: AlignConfig = AlignConfig()
                       ) -> Alignment:
    """Per-slice in-plane shifts of the SAX stack that best agree with the LAX views (all frames).

    `lax_views`: the views to align with (default all); the others play no part (e.g. a held-out
    view). A study without LAX views, or whose views do not cross the stack, gets zero shifts and
    a note saying why.
    """
    t_start = time.perf_counter()
    names = list(study.lax) if lax_views is None else list(lax_views)
    missing = [n for n in names if n not in study.lax]
    if missing:
        raise InputError(study.meta.get("source"), f"LAX view(s) {missing} not in this study (has {sorted(study.lax)})")
    Z = study.sax.spatial_shape[2]
    zero = np.zeros((Z, 2))
    if not names:
        return Alignment(zero, [], notes=["no LAX view: the SAX stack is left as acquired"], config=config,
                         seconds=time.perf_counter() - t_start)
    lines = _lines(study, names, config)
    if not lines:
        return Alignment(zero, names, {n: 0.0 for n in names},
                         notes=["no LAX view crosses the SAX slices over enough of the heart: the SAX stack is "
                                "left as acquired"], config=config, seconds=time.perf_counter() - t_start)
    px = study.sax.spacing[:2]
    data = np.asarray(study.sax.data, dtype=np.float32)
    frames = {k: torch.from_numpy(np.ascontiguousarray(np.moveaxis(data[:, :, k, :], -1, 0)))
              for k in {line.k for line in lines}}
    by_slice = {k: [line for line in lines if line.k == k] for k in range(Z)}

    offsets = {n: 0.0 for n in names}

    def effective(line: _Line, shift: np.ndarray) -> np.ndarray:
        """The shift at which to sample the SAX for this line, given its view's offset."""
        return shift - offsets[line.view] * line.normal_ij

    def unaries(candidates: list[np.ndarray], point_stride: int = 1, some: np.ndarray | None = None
                ) -> list[np.ndarray]:
        out = []
        for k in range(Z):
            u = config.prior * (candidates[k] ** 2).sum(1)
            for line in by_slice[k]:
                u = u + 1.0 - _line_ncc(line, frames[k], effective(line, candidates[k]), px, point_stride, some,
                                        some is not None)
            out.append(u)
        return out

    def refine(shifts: np.ndarray, previous: float) -> np.ndarray:
        for step in config.fine_steps_mm:
            local = _square(step, config.fine_reach * previous)
            candidates = [np.clip(shifts[k] + local, -config.bound_mm, config.bound_mm) for k in range(Z)]
            idx = _chain_minimum(unaries(candidates), candidates, config.smoothness)
            shifts = np.stack([candidates[k][idx[k]] for k in range(Z)])
            previous = step
        return shifts

    def best_offset(view: str, shifts: np.ndarray) -> float:
        """1D search of one view's offset, the SAX shifts fixed (0.5 mm grid, then 0.1 mm)."""
        mine = [line for line in lines if line.view == view]
        centre, width, best = 0.0, config.offset_bound_mm, 0.0
        for step in (0.5, 0.1):
            grid = np.clip(centre + np.arange(-width, width + 1e-9, step), -config.offset_bound_mm,
                           config.offset_bound_mm)
            cost = config.offset_prior * grid ** 2
            for line in mine:
                cands = shifts[line.k][None] - grid[:, None] * line.normal_ij[None]
                cost = cost + 1.0 - _line_ncc(line, frames[line.k], cands, px)
            best = float(grid[int(np.argmin(cost))])
            centre, width = best, 1.5 * step
        return best

    T = study.num_frames
    some = np.unique(np.linspace(0, T - 1, min(T, config.coarse_frames)).round().astype(int))
    coarse = _square(config.coarse_step_mm, config.bound_mm)
    candidates = [coarse] * Z
    idx = _chain_minimum(unaries(candidates, config.coarse_point_stride, some), candidates, config.smoothness)
    shifts = np.stack([candidates[k][idx[k]] for k in range(Z)])
    shifts = refine(shifts, config.coarse_step_mm)
    notes = []
    if config.lax_offsets and len(names) >= 2:
        for _ in range(config.offset_rounds):
            offsets.update({n: best_offset(n, shifts) for n in names})
            shifts = refine(shifts, 2 * config.fine_steps_mm[0])
    elif config.lax_offsets:
        notes.append("LAX offsets need two or more views: not estimated")
    shifts = np.round(shifts, 6)
    # Slices that no line crosses follow their neighbours through the smoothness term alone.
    records = []
    for line in lines:
        before, after = _line_ncc(line, frames[line.k], np.stack([np.zeros(2), effective(line, shifts[line.k])]), px)
        records.append({"slice": line.k, "view": line.view, "points": int(line.sax_ij.shape[1]),
                        "ncc_before": float(before), "ncc_after": float(after)})
    unseen = [k for k in range(Z) if not by_slice[k]]
    if unseen:
        notes.append(f"SAX slice(s) {unseen} cross no LAX view over the heart: their shifts follow the neighbours")
    return Alignment(shifts, names, {n: round(v, 3) for n, v in offsets.items()}, records,
                     time.perf_counter() - t_start, notes, config)


def line_agreement(study: Study, sax_shifts_mm: np.ndarray, lax_views: list[str] | None = None,
                   config: AlignConfig = AlignConfig()) -> list[dict]:
    """NCC along every intersection of the SAX slices with `lax_views` (default all), as acquired
    and with the slices at `sax_shifts_mm` (Z, 2): one dict per line (slice, view, points,
    ncc_before, ncc_after). Scores a held-out view that the estimate did not use."""
    names = list(study.lax) if lax_views is None else list(lax_views)
    shifts = np.asarray(sax_shifts_mm, dtype=np.float64)
    px = study.sax.spacing[:2]
    out = []
    for line in _lines(study, names, config):
        frames = torch.from_numpy(np.ascontiguousarray(np.moveaxis(
            np.asarray(study.sax.data[:, :, line.k, :], dtype=np.float32), -1, 0)))
        before, after = _line_ncc(line, frames, np.stack([np.zeros(2), shifts[line.k]]), px)
        out.append({"slice": line.k, "view": line.view, "points": int(line.sax_ij.shape[1]),
                    "ncc_before": float(before), "ncc_after": float(after)})
    return out


def offset_views(study: Study, alignment: Alignment | None) -> Study:
    """The study with each LAX view's affine moved along its normal by its estimated offset (no
    resampling: the images are untouched); the study itself when there is no offset."""
    if alignment is None or not any(alignment.lax_offsets_mm.values()):
        return study
    lax = dict(study.lax)
    for name, offset in alignment.lax_offsets_mm.items():
        if offset and name in lax:
            view = lax[name]
            affine = view.affine.copy()
            affine[:3, 3] += offset * view.slice_normal
            lax[name] = Volume(view.data, affine, dict(view.meta))
    return dataclasses.replace(study, lax=lax)


def align_study(study: Study, alignment: Alignment) -> Study:
    """The study with each SAX slice (and its labels) moved to where it was acquired; LAX untouched.
    Zero shifts return the SAX data unchanged."""
    if alignment.is_identity:
        return study
    sax = shift_slices(study.sax, alignment.sax_shifts_mm, order=1)
    labels = None if study.sax_labels is None else shift_slices(study.sax_labels, alignment.sax_shifts_mm, order=0)
    return dataclasses.replace(study, sax=sax, sax_labels=labels)


def resolve_alignment(study: Study, align: str | Alignment | None, lax_views: list[str] | None = None,
                      config: AlignConfig = AlignConfig()) -> Alignment | None:
    """What `--align auto|on|off` means for a study: 'off' (or None) -> None; 'auto' -> estimate
    when the views to use exist, else None; 'on' -> estimate (zero shifts and a note without LAX);
    an Alignment is used as given."""
    if align is None or isinstance(align, Alignment):
        return align
    if align not in ("auto", "on", "off"):
        raise ValueError(f"align must be auto, on or off, got {align!r}")
    if align == "off":
        return None
    names = list(study.lax) if lax_views is None else list(lax_views)
    if align == "auto" and not names:
        return None
    return estimate_alignment(study, names, config)


def write_alignment(alignment: Alignment, study: Study, out: str | Path) -> list[Path]:
    """alignment.json and the aligned SAX (`sa_aligned.nii.gz`, each slice shifted by its estimate,
    resampled once; LAX untouched) under `out`."""
    from cardiorecon.io.nifti import atomic_write, json_text, write_nifti

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json_text(alignment.to_json())  # an NCC without overlap is null, not NaN (invalid JSON)
    written = [atomic_write(out / "alignment.json", lambda tmp: tmp.write_text(text), suffix=".json")]
    aligned = align_study(study, alignment).sax
    written.append(write_nifti(aligned, out / "sa_aligned.nii.gz"))
    return written


__all__ = ["AlignConfig", "Alignment", "align_study", "estimate_alignment", "line_agreement", "offset_views",
           "resolve_alignment", "write_alignment"]
