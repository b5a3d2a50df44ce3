"""Automatic quality control of a subject's results, computed without reference labels.

At UK Biobank scale nobody looks at every subject: the pipelines trusted there (Bai et al., JCMR 2018;
Robinson et al., Med Image Anal 2019, automated quality control for the UK Biobank cardiac study) flag
the subjects whose segmentation or numbers cannot be trusted, and a person looks at those. Here every
rule is a pure function of the images, the predicted labels, the clinical numbers and the geometry:
reference labels are never read (they only score, elsewhere).

Each rule returns `Flag`s (level "check": a person should look; "fail": the numbers are not usable),
for the subject or for one frame. `QCReport` gathers them: the subject's status is the worst level
(ok / check / fail), its reasons the flags' messages, worst first.

Rules:

- `check_input_frames`: blank (all zero) or constant frames, and blank slices, of the input SAX.
- `check_motion`: no moving tissue in the cine (the heart region is found from motion: without it the
  crop and every number downstream are guesses).
- `lax_outside_stack`: LAX views that do not cross the SAX stack (ignored with a note naming the file).
- `check_function`: EDV, EF, mass outside physiological ranges (`RANGES`, sources cited there); RV and LV
  stroke volumes that disagree; ES volume above ED.
- `check_curves`: volumes inconsistent across frames (a frame that jumps away from both neighbours).
- `check_structures`: LV or RV missing on mid-ventricular slices where the other is present; LV cavity
  not enclosed by myocardium.
- `acquired_agreement`: the dense segmentation against the segmentation of the acquired slices alone
  (shape-interpolated between them), and the volume by Simpson's discs on the acquired slices against
  the dense volume.
- `lax_agreement`: the reconstruction sampled on each LAX plane against the LAX image (masked NCC).
- `perturbation_agreement`: the predicted-quality score: mean Dice between the segmenter's labels and
  its labels under small input perturbations (intensity gamma, an in-plane shift, noise). A segmenter
  that is unsure of a subject changes its answer under perturbations it should be invariant to; the
  correlation of this score with the real Dice is measured in docs/BENCHMARKS.md (section "Quality
  control").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

LEVELS = ("ok", "check", "fail")
LV, MYO, RV = 1, 2, 3  # the project's labels

# Physiological ranges of adult human hearts in cine SSFP, in mL, %, g.
#
# "normal": the 95 % reference interval of healthy adults, union of men and women, from Petersen et al.,
#   "Reference ranges for cardiac structure and function using cardiovascular magnetic resonance (CMR) in
#   Caucasians from the UK Biobank population cohort", JCMR 19:18 (2017), Table 2 (LVEDV men 111-221,
#   women 82-166 mL; LVEF men 47-70, women 51-72 %; RVEDV men 118-246, women 84-176 mL; RVEF men 47-66,
#   women 48-71 %; LV mass men 64-120, women 44-86 g), consistent with Kawel-Boehm et al., "Reference ranges
#   ('normal values') for cardiovascular magnetic resonance (CMR) in adults and children: 2020 update",
#   JCMR 22:87 (2020).
# "check": outside what disease commonly gives (dilated cardiomyopathy reaches LVEDV 300-400 mL, severe
#   heart failure EF 10-20 %): a person should look. Small volumes and high EF are checked closer to the
#   normal range than large volumes and low EF, because they are what a failed segmentation gives (a
#   missed cavity, a cavity found only at ED), while large volumes and low EF are common disease.
# "fail": not a human adult heart at all (a cavity of a few mL, EF above 85 %): the numbers are not usable.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "lv_edv_ml": {"normal": (82.0, 221.0), "check": (65.0, 350.0), "fail": (30.0, 600.0)},
    "rv_edv_ml": {"normal": (84.0, 246.0), "check": (65.0, 380.0), "fail": (30.0, 600.0)},
    "lv_ef": {"normal": (47.0, 72.0), "check": (15.0, 80.0), "fail": (5.0, 85.0)},
    "rv_ef": {"normal": (47.0, 71.0), "check": (15.0, 80.0), "fail": (5.0, 85.0)},
    "lv_mass_g": {"normal": (44.0, 120.0), "check": (35.0, 300.0), "fail": (15.0, 500.0)},
}
NAMES = {"lv_edv_ml": ("LV EDV", "mL"), "rv_edv_ml": ("RV EDV", "mL"), "lv_ef": ("LV EF", "%"),
         "rv_ef": ("RV EF", "%"), "lv_mass_g": ("LV mass", "g")}


@dataclass
class Flag:
    rule: str
    level: str  # "check" or "fail"
    message: str
    frame: int | None = None  # the input frame it concerns; None: the subject


@dataclass
class QCReport:
    flags: list[Flag] = field(default_factory=list)
    score: float | None = None  # predicted quality (perturbation agreement, 0..1)
    measures: dict = field(default_factory=dict)  # the numbers the rules looked at

    def add(self, flags: Iterable[Flag]) -> "QCReport":
        self.flags.extend(flags)
        return self

    @property
    def status(self) -> str:
        return max((f.level for f in self.flags), key=LEVELS.index, default="ok")

    def reasons(self) -> list[str]:
        """Unique messages, failures first (frame-level flags of one rule folded into one line)."""
        out: list[str] = []
        for level in ("fail", "check"):
            for f in self.flags:
                if f.level == level and f.message not in out:
                    out.append(f.message)
        return out

    def frame_status(self) -> dict[int, str]:
        per: dict[int, str] = {}
        for f in self.flags:
            if f.frame is not None:
                per[f.frame] = max(per.get(f.frame, "ok"), f.level, key=LEVELS.index)
        return per

    def row(self) -> dict:
        """The cohort.csv columns."""
        return {"qc": self.status, "qc_reasons": "; ".join(self.reasons()),
                "qc_score": "" if self.score is None else round(float(self.score), 4)}

    def to_json(self) -> dict:
        return {"status": self.status, "reasons": self.reasons(), "score": self.score,
                "frames": {str(k): v for k, v in sorted(self.frame_status().items())},
                "flags": [asdict(f) for f in self.flags], "measures": self.measures}


def _frame_msg(frames: Sequence[int], what: str) -> str:
    frames = sorted(set(int(f) for f in frames))
    shown = ", ".join(map(str, frames[:8])) + (" ..." if len(frames) > 8 else "")
    return f"{what} in frame{'s' if len(frames) > 1 else ''} {shown}"


# ----- input -----
def check_input_frames(data: np.ndarray, frames: Sequence[int] | None = None, source: str = "the SAX stack"
                       ) -> list[Flag]:
    """Blank (all zero) and constant frames (fail), and blank slices inside a frame (check), of the input
    SAX (X, Y, Z[, T]). `frames`: the frame numbers of the last axis (default 0..T-1)."""
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., None]
    frames = list(range(data.shape[3])) if frames is None else list(frames)
    flags: list[Flag] = []
    blank, constant, blank_slices = [], [], []
    for i, t in enumerate(frames):
        d = data[..., i]
        finite = d[np.isfinite(d)]
        if finite.size == 0 or not np.any(finite):
            blank.append(t)
        elif float(finite.max() - finite.min()) <= 1e-6 * max(1.0, float(np.abs(finite).max())):
            constant.append(t)
        else:
            flat = [k for k in range(d.shape[2]) if float(np.ptp(d[:, :, k])) == 0.0]
            if flat:
                blank_slices.append((t, flat))
    for t in blank:
        flags.append(Flag("blank_frame", "fail", _frame_msg(blank, f"{source} is blank (all zero)"), t))
    for t in constant:
        flags.append(Flag("blank_frame", "fail", _frame_msg(constant, f"{source} is constant"), t))
    if blank_slices:
        ts = [t for t, _ in blank_slices]
        ks = sorted({k for _, f in blank_slices for k in f})
        msg = _frame_msg(ts, f"{source} has constant slice(s) {', '.join(map(str, ks[:8]))}")
        flags += [Flag("blank_slice", "check", msg, t) for t in ts]
    return flags


#: A cine whose moving-tissue peak (first temporal harmonic, at a 15 mm scale) is less than this many
#: times the field of view's median motion has no beating heart in it. Measured (docs/BENCHMARKS.md,
#: Quality control): phantoms 4-6.5, Sunnybrook 6.5-22, ep_preclinical 8.7; ep_preclinical's first frame
#: repeated with fresh noise (5 % of its std) in every frame 1.0.
MOTION_MIN_RATIO = 2.0


def motion_ratio(sax) -> float | None:
    """Peak of the SAX cine's motion map (preprocess.motion_map) at a 15 mm scale over its median;
    None for fewer than 3 frames."""
    from scipy import ndimage

    from cardiorecon.preprocess import motion_map

    if sax.data.ndim != 4 or sax.data.shape[3] < 3:
        return None
    m = motion_map(sax)
    if m is None or not np.any(m > 0):
        return 0.0
    broad = ndimage.gaussian_filter(m, sigma=15.0 / np.asarray(sax.spacing[:2]))
    return float(broad.max() / max(float(np.median(m)), 1e-12))


def check_motion(sax) -> tuple[list[Flag], float | None]:
    """No moving tissue in the cine (fail): the heart region, found from motion, would be a guess."""
    r = motion_ratio(sax)
    if r is None or r >= MOTION_MIN_RATIO:
        return [], r
    return [Flag("no_motion", "fail", f"no moving tissue in the SAX cine (motion peak {r:.1f} x the "
                                      f"background, a beating heart gives > {MOTION_MIN_RATIO:g}): the heart "
                                      "region is a guess")], r


def lax_outside_stack(study) -> dict[str, str]:
    """{view name: source file} of the LAX views whose plane does not cross the SAX stack's box."""
    from cardiorecon.lax_operator import LaxOperator

    out = {}
    for name, view in study.lax.items():
        op = LaxOperator.build(study.sax.affine, study.sax.spatial_shape, view.affine, view.spatial_shape[:2],
                               max(float(view.slice_thickness), 1e-3), 1)
        if op.num_valid == 0:
            out[name] = str(view.meta.get("source") or name)
    return out


def drop_lax_outside_stack(study) -> list[str]:
    """Remove from `study` the LAX views that do not cross its SAX stack; one note per view, naming it."""
    from cardiorecon.geometry import voxel_to_world

    notes = []
    centre = voxel_to_world(study.sax.affine, (np.array(study.sax.spatial_shape) - 1) / 2.0)
    for name, source in lax_outside_stack(study).items():
        view = study.lax.pop(name)
        normal = np.cross(view.affine[:3, 0], view.affine[:3, 1])
        normal = normal / np.linalg.norm(normal)
        dist = abs(float(np.dot(centre - view.affine[:3, 3], normal)))
        notes.append(f"{source}: LAX view {name!r} does not cross the SAX stack (its plane is {dist:.0f} mm from "
                     "the stack's centre): ignored")
    return notes


# ----- numbers -----
def check_function(fn: dict, ranges: dict = RANGES) -> list[Flag]:
    """EDV, EF and mass outside physiological ranges; RV/LV stroke volumes that disagree; ES above ED."""
    flags = []
    for key, r in ranges.items():
        v = fn.get(key)
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        name, unit = NAMES[key]
        if not np.isfinite(v):
            flags.append(Flag("range", "fail", f"{name} is not a number"))
            continue
        for level in ("fail", "check"):
            lo, hi = r[level]
            if v < lo or v > hi:
                side = f"below {lo:g}" if v < lo else f"above {hi:g}"
                flags.append(Flag("range", level, f"{name} {v:.1f} {unit} is {side} {unit} "
                                                  f"({'not a human adult value' if level == 'fail' else 'outside the physiological range'}; "
                                                  f"normal {r['normal'][0]:g}-{r['normal'][1]:g})"))
                break
    for v in ("lv", "rv"):
        edv, esv = fn.get(f"{v}_edv_ml"), fn.get(f"{v}_esv_ml")
        if edv is not None and esv is not None and np.isfinite(edv) and np.isfinite(esv) and esv > edv * 1.02 \
                and edv > 0:
            flags.append(Flag("es_above_ed", "fail" if v == "lv" else "check",
                              f"{v.upper()} ES volume {esv:.1f} mL is above its ED volume {edv:.1f} mL"))
    lsv, rsv = fn.get("lv_sv_ml"), fn.get("rv_sv_ml")
    if lsv is not None and rsv is not None and np.isfinite(lsv) and np.isfinite(rsv) and max(lsv, rsv) > 10:
        ratio = min(lsv, rsv) / max(lsv, rsv)
        # Without valve regurgitation or a shunt the two ventricles eject the same volume (differences of
        # 5-10 % are normal in CMR); a half is a segmentation problem or marked disease.
        if ratio < 0.5:
            flags.append(Flag("stroke_volumes", "check", f"LV and RV stroke volumes disagree ({lsv:.1f} vs "
                                                         f"{rsv:.1f} mL)"))
    return flags


def check_curves(curves: dict, frames: Sequence[int], max_spike: float = 0.25) -> list[Flag]:
    """Volumes inconsistent across frames: an LV or RV volume of one frame that differs from both of its
    neighbouring frames, in the same direction, by more than `max_spike` of the curve's maximum (a spike or a
    dip of one frame: a frame segmented wrongly). A real cavity's sharpest one-frame change is its systolic
    dip; on the phantoms at 8 frames per cycle it stays under 0.15 of the maximum on one side. A cine of at
    least 8 frames (taken as one whole cycle)."""
    flags = []
    if len(frames) < 8:
        return flags
    for key, name in (("lv_ml", "LV"), ("rv_ml", "RV")):
        c = np.asarray(curves.get(key, []), float)
        if c.size < 8 or not np.all(np.isfinite(c)) or c.max() <= 0:
            continue
        d_prev, d_next = c - np.roll(c, 1), c - np.roll(c, -1)
        spike = np.where(np.sign(d_prev) == np.sign(d_next), np.minimum(np.abs(d_prev), np.abs(d_next)), 0) / c.max()
        bad = np.flatnonzero(spike > max_spike)
        if bad.size:
            fr = [frames[i] for i in bad]
            flags += [Flag("curve_jump", "check", _frame_msg(fr, f"{name} volume jumps away from both neighbouring "
                                                                 f"frames (by more than {100 * max_spike:.0f} % of "
                                                                 "its maximum)"), f) for f in fr]
    return flags


# ----- labels -----
def _mid(ks: np.ndarray) -> np.ndarray:
    """The middle half of sorted slice indices (at least one)."""
    if ks.size == 0:
        return ks
    lo, hi = ks.min(), ks.max()
    q0, q1 = lo + 0.25 * (hi - lo), lo + 0.75 * (hi - lo)
    m = ks[(ks >= q0) & (ks <= q1)]
    return m if m.size else ks


def structure_checks(labels: np.ndarray) -> dict:
    """Per frame of labels (X, Y, Z[, T]): share of mid-LV slices without RV, of mid-RV slices without LV,
    and the median share of the LV cavity's outline that is myocardium on mid-LV slices."""
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[..., None]
    out = {"rv_missing": [], "lv_missing": [], "enclosure": []}
    ring_struct = ndimage.generate_binary_structure(2, 1)
    for t in range(lab.shape[3]):
        L = lab[..., t]
        has_lv = (L == LV).any(axis=(0, 1))
        has_rv = (L == RV).any(axis=(0, 1))
        lv_k, rv_k = _mid(np.flatnonzero(has_lv)), _mid(np.flatnonzero(has_rv))
        out["rv_missing"].append(float(np.mean(~has_rv[lv_k])) if lv_k.size else float("nan"))
        out["lv_missing"].append(float(np.mean(~has_lv[rv_k])) if rv_k.size else float("nan"))
        enc = []
        for k in lv_k:
            cav = L[:, :, k] == LV
            if cav.sum() < 4:
                continue
            ring = ndimage.binary_dilation(cav, ring_struct) & ~cav
            if ring.any():
                enc.append(float(np.mean(L[:, :, k][ring] == MYO)))
        out["enclosure"].append(float(np.median(enc)) if enc else float("nan"))
    return out


#: The LV cavity's outline should be myocardium: papillary muscles and trabeculae are in the cavity, and
#: only the basal slices open into the outflow tract. Median over the mid-LV slices.
ENCLOSURE_CHECK, ENCLOSURE_FAIL = 0.7, 0.4


def check_structures(labels: np.ndarray, frames: Sequence[int] | None = None) -> tuple[list[Flag], dict]:
    """LV or RV missing where the other is present; LV cavity not enclosed by myocardium."""
    s = structure_checks(labels)
    T = len(s["enclosure"])
    frames = list(range(T)) if frames is None else list(frames)
    flags: list[Flag] = []
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(frames):
        lv_any, rv_any = not np.isnan(s["rv_missing"][i]), not np.isnan(s["lv_missing"][i])
        if not lv_any and not rv_any:
            groups.setdefault(("no_heart", "fail", "no LV and no RV found"), []).append(t)
            continue
        if not lv_any:
            groups.setdefault(("lv_missing", "fail", "no LV cavity found"), []).append(t)
        if not rv_any:
            groups.setdefault(("rv_missing", "fail", "no RV cavity found"), []).append(t)
        if lv_any and rv_any:
            if s["rv_missing"][i] > 0.5:
                groups.setdefault(("rv_missing", "fail", "RV missing on most mid-ventricular slices where the LV "
                                                         "is present"), []).append(t)
            elif s["rv_missing"][i] > 0.2:
                groups.setdefault(("rv_missing", "check", "RV missing on some mid-ventricular slices where the "
                                                          "LV is present"), []).append(t)
            if s["lv_missing"][i] > 0.5:
                groups.setdefault(("lv_missing", "fail", "LV missing on most mid-ventricular slices where the RV "
                                                         "is present"), []).append(t)
            elif s["lv_missing"][i] > 0.2:
                groups.setdefault(("lv_missing", "check", "LV missing on some mid-ventricular slices where the "
                                                          "RV is present"), []).append(t)
        e = s["enclosure"][i]
        if np.isfinite(e) and e < ENCLOSURE_CHECK:
            level = "fail" if e < ENCLOSURE_FAIL else "check"
            groups.setdefault(("enclosure", level, "LV cavity not enclosed by myocardium"), []).append(t)
    for (rule, level, what), ts in groups.items():
        msg = _frame_msg(ts, what)
        flags += [Flag(rule, level, msg, t) for t in ts]
    return flags, s


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def mean_dice(a: np.ndarray, b: np.ndarray, classes: Sequence[int] = (LV, MYO, RV)) -> float:
    """Mean Dice over the classes present in either map (nan when none is)."""
    d = [dice(a == c, b == c) for c in classes]
    d = [x for x in d if np.isfinite(x)]
    return float(np.mean(d)) if d else float("nan")


def interpolate_labels(acquired: np.ndarray, factor: int) -> np.ndarray:
    """Shape-based interpolation of labels (X, Y, Z[, T]) from acquired slices to (Z - 1) f + 1 slices:
    per class, the signed distance maps of the two neighbouring acquired slices are blended linearly."""
    from scipy import ndimage

    acq = np.asarray(acquired)
    squeeze = acq.ndim == 3
    if squeeze:
        acq = acq[..., None]
    X, Y, Z, T = acq.shape
    Zd = (Z - 1) * factor + 1
    out = np.zeros((X, Y, Zd, T), np.uint8)
    for t in range(T):
        classes = [c for c in (LV, MYO, RV) if (acq[..., t] == c).any()]
        if not classes:
            continue
        sdf = np.zeros((len(classes) + 1, X, Y, Z), np.float32)
        sdf[0] = 0.0  # background: chosen where every class is outside
        for ci, c in enumerate(classes, 1):
            present = [(acq[:, :, k, t] == c).any() for k in range(Z)]
            for k in range(Z):
                m = acq[:, :, k, t] == c
                if present[k]:
                    sdf[ci, :, :, k] = ndimage.distance_transform_edt(m) - ndimage.distance_transform_edt(~m)
                else:
                    sdf[ci, :, :, k] = -1e3
            for k in range(Z):  # an end of the structure: the mirrored neighbour, so it ends half a gap out
                if not present[k]:
                    near = [j for j in (k - 1, k + 1) if 0 <= j < Z and present[j]]
                    if near:
                        sdf[ci, :, :, k] = -np.abs(sdf[ci, :, :, near[0]])
        z = np.arange(Zd) / factor
        k0 = np.minimum(np.floor(z).astype(int), Z - 1)
        k1 = np.minimum(k0 + 1, Z - 1)
        w = (z - k0)[None, None, None, :]
        dense = (1 - w) * sdf[..., k0] + w * sdf[..., k1]
        best = dense.argmax(0)
        out[..., t] = np.where(best > 0, np.array([0] + classes, np.uint8)[best], 0)
    return out[..., 0] if squeeze else out


def acquired_agreement(acquired_labels: np.ndarray, dense_labels: np.ndarray, factor: int,
                       spacing: Sequence[float]) -> dict:
    """The dense segmentation (X, Y, Z', T) against the acquired slices' own segmentation (X, Y, Z, T):
    mean Dice at the acquired positions and at the new slices (against shape-based interpolation of the
    acquired ones), and the LV / RV volume by Simpson's discs on the acquired slices (area x slice step,
    the clinical method) against the dense volume. Per frame."""
    acq, dense = np.asarray(acquired_labels), np.asarray(dense_labels)
    if acq.ndim == 3:
        acq, dense = acq[..., None], dense[..., None]
    interp = interpolate_labels(acq, factor)
    Zd = dense.shape[2]
    at_acq = np.zeros(Zd, bool)
    at_acq[::factor] = True
    vox = float(np.prod(spacing)) / 1000.0
    disc = float(spacing[0]) * float(spacing[1]) * float(spacing[2]) * factor / 1000.0
    out = {"dice_acquired": [], "dice_new": [], "lv_disc_ml": [], "lv_dense_ml": [], "rv_disc_ml": [],
           "rv_dense_ml": []}
    for t in range(dense.shape[3]):
        out["dice_acquired"].append(mean_dice(dense[:, :, at_acq, t], acq[..., t]))
        out["dice_new"].append(mean_dice(dense[:, :, ~at_acq, t], interp[:, :, ~at_acq, t]) if (~at_acq).any()
                               else float("nan"))
        for c, name in ((LV, "lv"), (RV, "rv")):
            out[f"{name}_disc_ml"].append(float((acq[..., t] == c).sum()) * disc)
            out[f"{name}_dense_ml"].append(float((dense[..., t] == c).sum()) * vox)
    return out


def check_acquired_agreement(agreement: dict, frames: Sequence[int], dice_check: float = 0.8,
                             dice_fail: float = 0.5, volume_check: float = 0.2) -> list[Flag]:
    flags: list[Flag] = []
    low, bad, vol = [], [], []
    for i, t in enumerate(frames):
        d = np.nanmin([agreement["dice_acquired"][i], agreement["dice_new"][i]]) \
            if np.isfinite(agreement["dice_acquired"][i]) or np.isfinite(agreement["dice_new"][i]) else np.nan
        if np.isfinite(d) and d < dice_fail:
            bad.append(t)
        elif np.isfinite(d) and d < dice_check:
            low.append(t)
        for v in ("lv", "rv"):
            a, b = agreement[f"{v}_disc_ml"][i], agreement[f"{v}_dense_ml"][i]
            if max(a, b) > 5 and abs(a - b) / max(a, b) > volume_check:
                vol.append(t)
    for ts, level, what in ((bad, "fail", "dense segmentation disagrees with the acquired slices' (Dice < "
                                            f"{dice_fail:g})"),
                            (low, "check", f"dense segmentation differs from the acquired slices' (Dice < "
                                           f"{dice_check:g})"),
                            (sorted(set(vol)), "check", f"dense volume differs from the volume by discs on the "
                                                        f"acquired slices by more than {100 * volume_check:.0f} %")):
        if ts:
            flags += [Flag("acquired_vs_dense", level, _frame_msg(ts, what), t) for t in ts]
    return flags


# ----- LAX -----
def lax_agreement(dense_normalised, study, frames: Sequence[int], indices: Sequence[int]) -> dict[str, list[float]]:
    """{view: [masked NCC per index]}: the dense volume ([-1, 1], (X, Y, Z', T) Volume) sampled on each
    LAX plane (recon.lax.LaxOperator, across the view's thickness) against the LAX frame paired with the
    SAX frame, over the pixels where the plane crosses the volume."""
    import torch

    from cardiorecon.metrics.image import masked_ncc
    from cardiorecon.lax_operator import LaxOperator
    from cardiorecon.phase import lax_frame

    out: dict[str, list[float]] = {}
    data = np.asarray(dense_normalised.data, np.float32)
    shape = data.shape[:3]
    for name, view in study.lax.items():
        op = LaxOperator.for_view(dense_normalised.affine, shape, view, 3)
        if op.num_valid < 50:
            continue
        vals = []
        for i in indices:
            t = frames[i]
            pred = op.sample(torch.from_numpy(data[..., i])).numpy()
            ref = np.asarray(lax_frame(view, t, study.num_frames), np.float32)
            vals.append(float(masked_ncc(pred, ref, op.valid.numpy())))
        out[name] = vals
    return out


#: The reconstruction (linear) sampled on a LAX plane against the LAX image, masked NCC over the plane's
#: crossing of the working grid. Measured (docs/BENCHMARKS.md, Quality control): phantoms 0.95-0.99, biv-me
#: 0.78-0.93 (breath-hold misalignment, DESIGN.md 10); phantoms with the stack flipped 0.24-0.63 (one view
#: or more below 0.5 in each), with the field of view cut through the heart 0.33-0.95. Check below 0.5 (set
#: on these cases, between the flipped stacks and the lowest good view), fail below 0.1.
LAX_NCC_CHECK, LAX_NCC_FAIL = 0.5, 0.1


def check_lax_agreement(ncc: dict[str, list[float]]) -> list[Flag]:
    flags = []
    for name, vals in ncc.items():
        v = float(np.nanmean(vals)) if vals else float("nan")
        if np.isfinite(v) and v < LAX_NCC_CHECK:
            level = "fail" if v < LAX_NCC_FAIL else "check"
            flags.append(Flag("lax_agreement", level, f"reconstruction disagrees with LAX view {name!r} "
                                                      f"(NCC {v:.2f}, below {LAX_NCC_CHECK:g})"))
    return flags


# ----- predicted quality -----
def perturbations(image: np.ndarray, seed: int = 0) -> list[tuple[str, np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    """(name, perturbed image, map from the perturbed labels back to the original grid) of an image
    (X, Y, Z) in [-1, 1]: intensity gamma 0.7, an in-plane shift of 2 voxels in x and y, Gaussian noise of
    5 % of the range. Three: each costs one more segmentation of the frame."""
    img = np.asarray(image, np.float32)
    u = np.clip((img + 1) / 2, 0, 1)
    rng = np.random.default_rng(seed)
    ident = (lambda lab: lab)
    return [("gamma 0.7", u ** 0.7 * 2 - 1, ident),
            ("shift 2,-2", np.roll(img, (2, -2), axis=(0, 1)), lambda lab: np.roll(lab, (-2, 2), axis=(0, 1))),
            ("noise 0.05", np.clip(img + rng.normal(0, 0.1, img.shape).astype(np.float32), -1, 1), ident)]


def perturbation_agreement(segment: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                           labels: np.ndarray | None = None, seed: int = 0) -> dict:
    """Predicted quality of a segmentation without reference labels: mean Dice (LV cavity, LV myocardium,
    RV cavity) between `segment(image)` (or `labels`) and the segmentation of each perturbed image mapped
    back. `segment`: image (X, Y, Z) in [-1, 1] -> labels (X, Y, Z)."""
    base = segment(image) if labels is None else np.asarray(labels)
    per = {}
    for name, img, back in perturbations(image, seed):
        per[name] = mean_dice(back(segment(img)), base)
    vals = [v for v in per.values() if np.isfinite(v)]
    return {"score": float(np.mean(vals)) if vals else 0.0, "per_perturbation": per}


#: Predicted quality below which a person should look / the segmentation is not usable. Calibrated on the
#: labelled real cases (docs/BENCHMARKS.md, Quality control).
SCORE_CHECK, SCORE_FAIL = 0.85, 0.6


def check_score(score: float | None) -> list[Flag]:
    if score is None or not np.isfinite(score) or score >= SCORE_CHECK:
        return []
    level = "fail" if score < SCORE_FAIL else "check"
    return [Flag("predicted_quality", level, f"segmentation unstable under small input perturbations "
                                             f"(predicted quality {score:.2f}, below {SCORE_CHECK:g})")]


def segment_qc_line(study, frames: Sequence[int], fn: dict | None) -> str:
    """One line for `cardiorecon segment`: its input frames and (where ED and ES were segmented) numbers."""
    from pathlib import Path

    sax = np.asarray(study.sax.data)
    sax = sax if sax.ndim == 4 else sax[..., None]
    report = QCReport(check_input_frames(sax[..., list(frames)], frames,
                                         Path(str(study.sax.meta.get("source") or "the SAX stack")).name))
    if fn is not None:
        report.add(check_function({k: v for k, v in fn.items()}))
    return f"qc {report.status}" + (f": {'; '.join(report.reasons())}" if report.reasons() else "")


__all__ = ["segment_qc_line", "Flag", "LEVELS", "QCReport", "RANGES", "acquired_agreement", "check_acquired_agreement",
           "check_curves", "check_function", "check_input_frames", "check_lax_agreement", "check_motion",
           "check_score", "check_structures", "drop_lax_outside_stack", "interpolate_labels", "lax_agreement",
           "lax_outside_stack", "mean_dice", "motion_ratio", "perturbation_agreement", "structure_checks"]
