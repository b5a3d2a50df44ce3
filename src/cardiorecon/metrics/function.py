"""Volume curves over the cardiac cycle and the clinical numbers read from them.

ED is the frame of largest LV cavity volume and ES the frame of smallest (as UK Biobank pipelines
read them from the curve, so a study without ED/ES tags still gets them); RV volumes are read at
the same frames. Smoothness of a curve: the RMS of its second difference over frames (mL), taken
circularly when the curve covers the whole cycle.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cardiorecon.metrics.seg import MYOCARDIAL_DENSITY_G_PER_ML, ejection_fraction, myocardial_mass_g, volume_ml
from cardiorecon.volume import LABELS

CURVES = {"lv_ml": LABELS["lv_cavity"], "rv_ml": LABELS["rv_cavity"], "lv_myo_ml": LABELS["lv_myocardium"]}


def volume_curves(labels: np.ndarray, spacing: Sequence[float] | float) -> dict[str, np.ndarray]:
    """LV cavity, RV cavity and LV myocardium volume (mL) of every frame of labels (X, Y, Z, T)."""
    lab = np.asarray(labels)
    if lab.ndim != 4:
        raise ValueError(f"volume_curves needs a 4D label map (X, Y, Z, T), got shape {lab.shape}")
    return {name: np.array([volume_ml(lab[..., t], v, spacing) for t in range(lab.shape[3])])
            for name, v in CURVES.items()}


def dense_volume_curves(labels: np.ndarray, spacing: Sequence[float], acquired_step_mm: float
                        ) -> dict[str, np.ndarray]:
    """`volume_curves` of a dense stack (X, Y, Z', T) upsampled from slices `acquired_step_mm` apart,
    over the extent the acquired stack covers (Simpson's rule: each acquired slice stands for one
    slice step): interior dense slices weigh their own step, the first and last also the half
    acquired step beyond them. With no upsampling this is `volume_curves` exactly, so a dense
    volume and a segmentation of the acquired slices measure the same extent."""
    lab = np.asarray(labels)
    if lab.ndim != 4:
        raise ValueError(f"dense_volume_curves needs a 4D label map (X, Y, Z, T), got shape {lab.shape}")
    sx, sy, sz = (float(v) for v in spacing)
    w = np.full(lab.shape[2], sz)
    w[0] = w[-1] = sz / 2 + acquired_step_mm / 2
    if lab.shape[2] == 1:
        w[0] = acquired_step_mm
    area_ml = sx * sy / 1000.0
    return {name: np.array([float((np.count_nonzero(lab[..., t] == v, axis=(0, 1)) * w).sum() * area_ml)
                            for t in range(lab.shape[3])]) for name, v in CURVES.items()}


def function_from_curves(curves: dict[str, np.ndarray], labels: np.ndarray | None = None,
                         spacing: Sequence[float] | float | None = None, one_frame_is_ed: bool = True
                         ) -> dict[str, float | int | None]:
    """ED/ES frame indices (into the curves), LV and RV EDV, ESV, SV (mL), EF (%), and LV mass (g)
    at ED: from `labels` (X, Y, Z, T) with `spacing` when given, else from the myocardium curve.

    One frame (`--frames ed`) has no ES: `es_index` is None and ESV, SV and EF are NaN (never ESV = EDV
    and EF 0); its volumes are the EDV and the mass only when `one_frame_is_ed` (the frame is the study's
    ED), else `ed_index` is None too and they are NaN."""
    lv, rv = np.asarray(curves["lv_ml"]), np.asarray(curves["rv_ml"])
    nan = float("nan")
    if lv.size >= 2:
        ed, es = int(np.argmax(lv)), int(np.argmin(lv))
    else:
        ed, es = (0 if one_frame_is_ed else None), None
    out: dict[str, float | int | None] = {"ed_index": ed, "es_index": es}
    for name, c in (("lv", lv), ("rv", rv)):
        edv = float(c[ed]) if ed is not None else nan
        esv = float(c[es]) if es is not None else nan
        out.update({f"{name}_edv_ml": edv, f"{name}_esv_ml": esv, f"{name}_sv_ml": edv - esv,
                    f"{name}_ef": ejection_fraction(edv, esv) if es is not None else nan})
    if ed is None:
        out["lv_mass_g"] = nan
    elif labels is not None and spacing is not None:
        out["lv_mass_g"] = myocardial_mass_g(np.asarray(labels)[..., ed], spacing)
    else:
        out["lv_mass_g"] = MYOCARDIAL_DENSITY_G_PER_ML * float(np.asarray(curves["lv_myo_ml"])[ed])
    return out


def second_difference_rms(curve: Sequence[float], circular: bool = True) -> float:
    """RMS (same units as the curve) of c[t-1] - 2 c[t] + c[t+1]; circular over a whole cycle."""
    c = np.asarray(curve, np.float64)
    if c.size < 3:
        return float("nan")
    d2 = np.roll(c, 1) - 2 * c + np.roll(c, -1) if circular else c[:-2] - 2 * c[1:-1] + c[2:]
    return float(np.sqrt(np.mean(d2 ** 2)))


def curve_rms(curve: Sequence[float], reference: Sequence[float]) -> float:
    """RMS difference (mL) of two volume curves over the same frames."""
    a, b = np.asarray(curve, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"curves differ in length: {a.shape} vs {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


__all__ = ["CURVES", "curve_rms", "function_from_curves", "second_difference_rms", "volume_curves"]


def study_function(labels: np.ndarray, spacing: Sequence[float] | float, frames: Sequence[int],
                   ed_frame: int | None, es_frame: int | None) -> tuple[list[dict], dict[str, float | int | str]]:
    """Per-frame volumes and the clinical summary of a segmented SAX stack (labels (X, Y, Z, T) over
    `frames`): rows {frame, phase, lv_ml, rv_ml, lv_myo_ml, lv_mass_g} and a summary with LV and RV
    EDV, ESV, SV (mL), EF (%) and LV mass at ED (g). ED/ES are the study's own frames when both were
    segmented (`ed_es` = 'study'), else the largest and smallest LV cavity of the segmented frames
    when there are at least two (`ed_es` = 'curve'); with one frame only its volumes are given and
    EDV/ESV/SV/EF stay NaN (never ESV = EDV)."""
    lab = np.asarray(labels)
    lab = lab if lab.ndim == 4 else lab[..., None]
    frames = list(frames)
    if lab.shape[3] != len(frames):
        raise ValueError(f"{lab.shape[3]} label frames for {len(frames)} frame numbers")
    curves = volume_curves(lab, spacing)
    if ed_frame in frames and es_frame in frames and ed_frame != es_frame:
        ed, es, source = frames.index(ed_frame), frames.index(es_frame), "study"
    elif len(frames) >= 2:
        ed, es, source = int(np.argmax(curves["lv_ml"])), int(np.argmin(curves["lv_ml"])), "curve"
    else:
        ed, es, source = (0 if ed_frame in frames or ed_frame is None else None), None, "one frame"
    rows = []
    for i, t in enumerate(frames):
        rows.append({"frame": t, "phase": "ED" if i == ed else "ES" if i == es else "",
                     "lv_ml": float(curves["lv_ml"][i]), "rv_ml": float(curves["rv_ml"][i]),
                     "lv_myo_ml": float(curves["lv_myo_ml"][i]),
                     "lv_mass_g": MYOCARDIAL_DENSITY_G_PER_ML * float(curves["lv_myo_ml"][i])})
    nan = float("nan")
    summary: dict[str, float | int | str] = {"ed_es": source, "ed_frame": frames[ed] if ed is not None else "",
                                             "es_frame": frames[es] if es is not None else ""}
    for name in ("lv", "rv"):
        edv = float(curves[f"{name}_ml"][ed]) if ed is not None else nan
        esv = float(curves[f"{name}_ml"][es]) if es is not None else nan
        summary.update({f"{name}_edv_ml": edv, f"{name}_esv_ml": esv, f"{name}_sv_ml": edv - esv,
                        f"{name}_ef": ejection_fraction(edv, esv) if es is not None and ed is not None else nan})
    summary["lv_mass_g"] = rows[ed]["lv_mass_g"] if ed is not None else nan
    return rows, summary
