"""Pair each LAX frame with the SAX frame of the same cardiac phase.

SAX and LAX cines are separate breath-holds with their own heart rate, frame count and trigger
delays, so SAX frame t is not LAX frame t. The pairing, stored per view as
`view.meta["sax_frame_pairing"]` (one LAX frame index per SAX frame) and its rule as
`view.meta["sax_frame_pairing_rule"]`, comes from, in order:

1. the view's own ED/ES files (`la_4ch_ED/ES.nii.gz`): their frames pair with SAX ED and ES;
2. trigger times (DICOM): the phase of each frame as its fraction of the cardiac cycle, the cycle
   of a retrospectively gated cine being the frame count times the mean frame interval;
3. a SAX holding only ED and ES frames against a LAX cine: the LAX frame whose image agrees best
   with the SAX frame along their intersection (NCC), because the SAX frames' place in the cycle is
   unknown (ES is not at a fixed fraction: it was near frame 17 of 50 on a UK Biobank subject);
4. otherwise the fraction of the cycle: LAX frame round(t * T_lax / T_sax).
"""

from __future__ import annotations

import numpy as np

from cardiorecon.volume import PAIRING, RULE, Study, Volume


def _phases(triggers_ms: list[float]) -> np.ndarray | None:
    t = np.asarray(triggers_ms, dtype=float)
    if t.size < 2 or not np.all(np.isfinite(t)):
        return None
    step = np.diff(t)
    if np.any(step <= 0):
        return None
    cycle = t.size * float(step.mean())
    return (t - t[0] + (t[0] % cycle)) / cycle % 1.0


def _by_triggers(sax: Volume, view: Volume) -> list[int] | None:
    ps, pl = _phases(sax.meta.get("trigger_times_ms", [])), _phases(view.meta.get("trigger_times_ms", []))
    if ps is None or pl is None or len(ps) != sax.num_frames or len(pl) != view.num_frames:
        return None
    d = np.abs(ps[:, None] - pl[None, :])
    d = np.minimum(d, 1 - d)  # circular: the end of the cycle meets its start
    return [int(i) for i in np.argmin(d, axis=1)]


def _by_fraction(num_sax: int, num_lax: int) -> list[int]:
    return [int(round(t * num_lax / num_sax)) % num_lax for t in range(num_sax)]


def _by_image(sax: Volume, view: Volume) -> list[int] | None:
    """For each SAX frame the LAX frame that agrees best along the SAX-LAX intersection."""
    import torch

    from cardiorecon.metrics.image import masked_ncc
    from cardiorecon.lax_operator import LaxOperator

    op = LaxOperator.for_view(sax.affine, sax.spatial_shape, view, num_samples=1)
    if op.num_valid < 20:
        return None
    valid = op.valid.numpy().astype(bool)
    out = []
    for t in range(sax.num_frames):
        sampled = op.sample(torch.from_numpy(np.ascontiguousarray(sax.data[..., t], dtype=np.float32))).numpy()
        scores = [masked_ncc(sampled, view.data[:, :, 0, k], valid) for k in range(view.num_frames)]
        out.append(int(np.nanargmax(scores)))
    return out


def phase_pairing(study: Study) -> dict[str, tuple[list[int], str]]:
    """{view: (LAX frame per SAX frame, the rule that chose it)} for every LAX view of `study`; a
    pairing a reader already stored (rule 1: the view's own ED/ES files) is kept."""
    sax = study.sax
    out = {}
    for name, view in study.lax.items():
        if PAIRING in view.meta:
            out[name] = (list(view.meta[PAIRING]), str(view.meta.get(RULE, "")))
            continue
        pairing, rule = None, ""
        if view.num_frames == 1:
            pairing, rule = [0] * sax.num_frames, "single LAX frame"
        if pairing is None:
            pairing = _by_triggers(sax, view)
            rule = "trigger times" if pairing is not None else ""
        if pairing is None and study.meta.get("sax_ed_es_only") and view.num_frames > 2:
            pairing = _by_image(sax, view)
            rule = "image agreement along the SAX-LAX intersection (SAX has ED and ES only)" \
                if pairing is not None else ""
        if pairing is None:
            pairing, rule = _by_fraction(sax.num_frames, view.num_frames), "fraction of the cycle"
        out[name] = (pairing, rule)
    return out


def apply_pairing(study: Study, pairing: dict[str, tuple[list[int], str]]) -> None:
    """Store `pairing` ({view: (LAX frames, rule)}) in each LAX view's meta and in its label map's
    where the frame counts agree (in place)."""
    for name, (frames, rule) in pairing.items():
        view = study.lax[name]
        view.meta[PAIRING], view.meta[RULE] = list(frames), rule
        labels = study.lax_labels.get(name)
        if labels is not None and labels.num_frames == view.num_frames:
            labels.meta[PAIRING], labels.meta[RULE] = list(frames), rule


def pair_lax_frames(study: Study) -> None:
    """Set the SAX -> LAX frame pairing of every LAX view (and LAX label map) of `study` in place
    (`phase_pairing`, then `apply_pairing`); `plan.make_plan` does this for every reconstruction."""
    apply_pairing(study, phase_pairing(study))


def lax_frame_index(view: Volume, t: int, num_frames: int) -> int:
    """The LAX frame paired with SAX frame t of num_frames (the stored pairing, else the fraction
    of the cycle)."""
    pairing = view.meta.get(PAIRING)
    if pairing is not None and len(pairing) == num_frames:
        return int(pairing[t])
    return _by_fraction(num_frames, view.num_frames)[t]


def lax_frame(view: Volume, t: int, num_frames: int) -> np.ndarray:
    """The LAX image (H, W) of the same cardiac phase as SAX frame t of num_frames (the stored
    pairing: the plan's, or the view's ED/ES files'; else the fraction of the cycle)."""
    if view.data.ndim == 3:
        return view.data[:, :, 0]
    return view.data[:, :, 0, lax_frame_index(view, t, num_frames)]
