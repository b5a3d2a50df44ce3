"""The evaluation protocols of DESIGN.md section 6, every method on the same cases.

- `phantom_protocol`: reconstruct the 10 mm stack at factor 5; SSIM/PSNR of the new slices against
  truth_sa; segment the reconstruction and score Dice/HD95 per class against truth_label_sa; LV/RV
  volumes and EF from the ED and ES reconstructions against the phantom's true values.
- `slice_drop_protocol`: drop every other acquired SAX slice, reconstruct them (factor 2), score
  them against the originals; Dice/HD95 on the dropped slices where labels exist.
- `lax_holdout_protocol`: for each LAX view in turn, guide with the others, sample the
  reconstruction on the held-out plane, score masked NCC/SSIM there, and Dice/HD95 of the sampled
  segmentation against the view's labels where present.

Every protocol returns long-format rows (one per case, method, frame and structure, columns
`COLUMNS`); `cardiorecon.report.evaluation` turns them into the CSV, the Markdown summary, the
figures and the HTML page.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cardiorecon.errors import CardioReconError, InputError
from cardiorecon.geometry import resample
from cardiorecon.io import read_study
from cardiorecon.evaluator import Evaluator
from cardiorecon.metrics.image import masked_ncc, masked_ssim, psnr, ssim
from cardiorecon.metrics.seg import STRUCTURES, ejection_fraction, hd95, overlap_scores, volume_ml
from cardiorecon.lax_operator import LaxOperator
from cardiorecon.phase import lax_frame, pair_lax_frames
from cardiorecon.recon import get_method
from cardiorecon.report.results_csv import COLUMNS, TRUTH_IMAGE
from cardiorecon.segment import segment_array
from cardiorecon.volume import LABELS, Study, Volume

def frames_to_score(study: Study, frames: str) -> list[int]:
    """'ed-es' (ED and ES where known, else ED, else frame 0 with a note), or any --frames value
    (`Study.resolve_frames`: 'ed', 'es', 'ed,es', 'all', indices from 0)."""
    if frames == "ed-es":
        known = [t for t in (study.ed_frame, study.es_frame) if t is not None]
        if known:
            return known
        study.meta.setdefault("notes", []).append("ED and ES unknown: frame 0 scored")
        return [0]
    return study.resolve_frames(frames)  # ed, es, ed,es, all, indices: as in every command


def _run_cases(ev: Evaluator, folders: list[Path], case: Callable[[int, Path], list[dict]]) -> list[dict]:
    """Run `case` on every folder: a case that fails is recorded in `ev.failures` (its error in one
    line) and the others go on; `ev.on_rows` sees the rows so far after every finished case."""
    rows: list[dict] = []
    for n, folder in enumerate(folders):
        try:
            rows += case(n, Path(folder))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one subject's failure must not stop the others
            message = str(exc) if isinstance(exc, CardioReconError) else f"{type(exc).__name__}: {exc}"
            ev.failures.append({"case": Path(folder).name, "folder": str(folder), "error": message})
            ev.echo(f"[{n + 1}/{len(folders)}] {folder}: FAILED: {message}")
            continue
        if ev.on_rows is not None:
            ev.on_rows(rows)
    return rows


def _row(protocol: str, case: str, method: str, frame, structure: str, **values) -> dict:
    row = {c: "" for c in COLUMNS}
    row.update(protocol=protocol, case=case, method=method, frame=frame, structure=structure)
    for k, v in values.items():
        if k not in row:
            raise KeyError(k)
        row[k] = v
    return row


def _read_case(ev: Evaluator, folder: Path) -> Study:
    """The case as read, its LAX views paired with the SAX frames by phase on the whole study (the
    slice-drop study keeps this pairing)."""
    study = read_study(folder, lax_thickness_mm=ev.lax_thickness_mm)
    pair_lax_frames(study)
    return study


def _case_name(study: Study, folder: Path) -> str:
    return str(study.meta.get("subject") or folder.name)


def _segment(ev: Evaluator, dense: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray | None:
    return None if ev.segnet is None else segment_array(ev.segnet, dense, affine)


def _structure_rows(protocol, case, method, frame, pred, ref, spacing, structures=STRUCTURES, **extra):
    rows = []
    for name, v in structures.items():
        d, h, empty = overlap_scores(pred == v, ref == v, spacing)
        rows.append(_row(protocol, case, method, frame, name, dice=d, hd95=h, note=empty,
                         volume_ml=volume_ml(pred, v, spacing), true_volume_ml=volume_ml(ref, v, spacing), **extra))
    return rows


def lax_ncc(study: Study, dense: np.ndarray, affine: np.ndarray, t: int, views: list[str] | None = None
            ) -> dict[str, float]:
    """Masked NCC of the dense volume (X, Y, Z) on each LAX view's plane against the view's frame paired with
    SAX frame t ({view: NCC}; views the volume does not reach are left out)."""
    out = {}
    for name in views or list(study.lax):
        op = LaxOperator.for_view(affine, dense.shape, study.lax[name])
        if op.num_valid == 0:
            continue
        sampled = op.sample(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))).numpy()
        out[name] = masked_ncc(sampled, lax_frame(study.lax[name], t, study.num_frames), op.valid.numpy())
    return out


# --------------------------------------------------------------------------------------- phantom

def phantom_protocol(ev: Evaluator, folders: list[Path], factor: int = 5) -> list[dict]:
    """The phantom protocol on subject folders holding truth_sa / truth_label_sa / subject.json."""
    def case(n: int, folder: Path) -> list[dict]:
        rows: list[dict] = []
        folder = Path(folder)
        for name in ("truth_sa.nii.gz", "truth_label_sa.nii.gz", "subject.json"):
            if not (folder / name).is_file():
                raise InputError(folder / name, "the phantom protocol needs the phantom's dense truth "
                                                "(generate with `cardiorecon phantom`, without --no-truth)")
        study = _read_case(ev, folder)
        case = _case_name(study, folder)
        truth = read_study(folder / "truth_sa.nii.gz").sax
        truth_lab = read_study(folder / "truth_label_sa.nii.gz").sax
        info = json.loads((folder / "subject.json").read_text())
        frames = [study.ed_frame, study.es_frame]
        ev.echo(f"[{n + 1}/{len(folders)}] {case}: ED {frames[0]}, ES {frames[1]}")
        volumes: dict[str, dict[int, np.ndarray]] = {}
        for method in ev.methods:
            rec = ev.run(study, method, factor, frames)
            dense_affine = rec.normalised.affine
            spacing = tuple(float(s) for s in rec.normalised.spacing)
            shape = rec.normalised.spatial_shape
            new = [k for k in range(shape[2]) if k % rec.factor]
            for i, t in enumerate(frames):
                dense = rec.normalised.data[..., i]
                ref = rec.grid.intensity.forward(resample(truth.frame(t), dense_affine, shape, order=1).data)
                ref_lab = resample(truth_lab.frame(t), dense_affine, shape, order=0).data
                ncc = lax_ncc(study, dense, dense_affine, t)
                rows.append(_row("phantom", case, method, t, "image", ssim=ssim(dense[:, :, new], ref[:, :, new], 2.0),
                                 psnr=psnr(dense[:, :, new], ref[:, :, new], 2.0),
                                 ncc=float(np.mean(list(ncc.values()))) if ncc else "",
                                 seconds=rec.seconds_per_frame[i], peak_mb=rec.peak_memory_mb,
                                 note="; ".join(rec.notes)))
                rows += [_row("phantom", case, method, t, f"lax_{v}", ncc=c) for v, c in ncc.items()]
                pred = _segment(ev, dense, dense_affine)
                if pred is not None:
                    rows += _structure_rows("phantom", case, method, t, pred, ref_lab, spacing)
                    volumes.setdefault(method, {})[t] = pred
                    if method == ev.methods[0]:  # the segmentation network on the true image, once
                        ref_pred = _segment(ev, ref, dense_affine)
                        rows += _structure_rows("phantom", case, TRUTH_IMAGE, t, ref_pred, ref_lab, spacing)
                        volumes.setdefault(TRUTH_IMAGE, {})[t] = ref_pred
                ev.keep_slices(case, t, method, dense, pred, ref, ref_lab, new)
                if n == 0 and i == 0:
                    ev.figures.setdefault("montage", {"truth": ref, "new": new, "case": case, "frame": t,
                                                      "affine": dense_affine, "study": study,
                                                      "truth_labels": ref_lab})
                    ev.figures["montage"][method] = (dense, pred)
        if n == 0 and "montage" in ev.figures:
            m = ev.figures["montage"]
            ev.figures.setdefault("lax", lax_figure_data(study, {k: m[k] for k in ev.methods if k in m},
                                                         m["affine"], m["frame"]))
        for method, by_frame in volumes.items():
            rows += _function_rows("phantom", case, method, by_frame[frames[0]], by_frame[frames[1]], spacing, info)
        return rows

    return _run_cases(ev, folders, case)


def _function_rows(protocol, case, method, ed, es, spacing, info) -> list[dict]:
    rows = []
    for name, label in (("lv", LABELS["lv_cavity"]), ("rv", LABELS["rv_cavity"])):
        edv, esv = volume_ml(ed, label, spacing), volume_ml(es, label, spacing)
        ef = ejection_fraction(edv, esv)
        true_ef = 100 * float(info[f"{name}_ef"]) if f"{name}_ef" in info else ""
        err = abs(ef - true_ef) if true_ef != "" and np.isfinite(ef) else ""
        rows.append(_row(protocol, case, method, "ed-es", name, ef=ef if np.isfinite(ef) else "", true_ef=true_ef,
                         ef_error=err, volume_ml=edv, true_volume_ml=info.get(f"{name}_edv_ml", "")))
    return rows


# ------------------------------------------------------------------------------------ slice drop

def drop_slices(study: Study, keep_every: int = 2) -> Study:
    """The study with only every `keep_every`-th SAX slice (0, k, 2k, ...): the affine's slice
    step grows by k, labels and annotations follow."""
    Z = study.sax.spatial_shape[2]
    keep = list(range(0, Z, keep_every))
    if len(keep) < 2:
        raise InputError(study.meta.get("source"), f"slice-drop needs at least {keep_every + 1} SAX slices, has {Z}")
    affine = study.sax.affine.copy()
    affine[:3, 2] *= keep_every

    thickness = study.sax.slice_thickness  # each kept slice is as thick as acquired (not the new step)

    def sub(vol: Volume | None) -> Volume | None:
        return None if vol is None else Volume(vol.data[:, :, keep], affine,
                                               {**vol.meta, "slice_thickness_mm": thickness})

    meta = {**study.meta, "kept_every": keep_every, "original_sax_slices": Z}
    if "annotated" in meta:
        meta["annotated"] = [{**a, "slice": a["slice"] // keep_every} for a in meta["annotated"]
                             if a["slice"] % keep_every == 0]
    return dataclasses.replace(study, sax=sub(study.sax), sax_labels=sub(study.sax_labels), meta=meta)


def _annotated(study: Study) -> dict[tuple[int, int], tuple[int, ...]]:
    if study.sax_labels is None:
        return {}
    if "annotated" in study.meta:
        return {(a["slice"], a["frame"]): tuple(a["classes"]) for a in study.meta["annotated"]}
    frames = study.meta.get("labelled_frames") or range(study.num_frames)
    return {(z, t): tuple(STRUCTURES.values()) for t in frames for z in range(study.sax.spatial_shape[2])}


def slice_drop_protocol(ev: Evaluator, folders: list[Path], frames: str = "ed-es") -> list[dict]:
    """Drop every other SAX slice, reconstruct them at factor 2, score against the originals."""
    def case(n: int, folder: Path) -> list[dict]:
        rows: list[dict] = []
        study = _read_case(ev, folder)
        case = _case_name(study, Path(folder))
        frame_list = frames_to_score(study, frames)
        sub = drop_slices(study, 2)
        annotated = _annotated(study)
        ev.echo(f"[{n + 1}/{len(folders)}] {case}: {study.sax.spatial_shape[2]} slices -> "
                f"{sub.sax.spatial_shape[2]} kept, frames {frame_list}")
        for method in ev.methods:
            rec = ev.run(sub, method, 2, frame_list, align="off")  # the originals are scored as acquired
            affine, shape = rec.normalised.affine, rec.normalised.spatial_shape
            spacing = tuple(float(s) for s in rec.normalised.spacing)
            dropped = list(range(1, shape[2], 2))  # dense slice k is original slice k
            for i, t in enumerate(frame_list):
                dense = rec.normalised.data[..., i]
                orig = resample(study.sax.frame(t), affine, shape, order=1).data
                ref = rec.grid.intensity.forward(orig)
                rows.append(_row("slice-drop", case, method, t, "image",
                                 ssim=ssim(dense[:, :, dropped], ref[:, :, dropped], 2.0),
                                 psnr=psnr(dense[:, :, dropped], ref[:, :, dropped], 2.0),
                                 seconds=rec.seconds_per_frame[i], peak_mb=rec.peak_memory_mb,
                                 note="; ".join(rec.notes)))
                ev.keep_slices(case, t, method, dense, None, ref,
                               None if study.sax_labels is None else
                               resample(study.sax_labels.frame(t), affine, shape, order=0).data, dropped)
                if n == 0 and i == 0:
                    ev.figures.setdefault("montage", {"truth": ref, "new": dropped, "case": case, "frame": t,
                                                      "affine": affine, "study": study, "truth_labels": None})
                    ev.figures["montage"][method] = (dense, None)
                scored = [(z, annotated[(z, t)]) for z in dropped if (z, t) in annotated]
                if not scored or ev.segnet is None:
                    continue
                ref_lab = resample(study.sax_labels.frame(t), affine, shape, order=0).data
                classes = set.intersection(*(set(c) for _, c in scored))
                # the truth-image row: the segmenter on the acquired slices themselves (its own floor), once
                scoring = [(method, dense)] + ([(TRUTH_IMAGE, ref)] if method == ev.methods[0] else [])
                for name_m, image in scoring:
                    pred = segment_array(ev.segnet, image, affine)[:, :, [z for z, _ in scored]]
                    for name, v in STRUCTURES.items():
                        if v not in classes:
                            continue
                        p = np.stack([pred[:, :, j] == v for j in range(len(scored))], -1)
                        r = np.stack([ref_lab[:, :, z] == v for z, _ in scored], -1)
                        d, _, empty = overlap_scores(p, r, spacing)
                        # 2D HD95 of the slices where both hold the structure; the others are counted apart
                        both = [j for j in range(len(scored)) if p[..., j].any() and r[..., j].any()]
                        hds = [hd95(p[..., j], r[..., j], spacing[:2]) for j in both]
                        one = sum(p[..., j].any() != r[..., j].any() for j in range(len(scored)))
                        note = f"{len(scored)} annotated dropped slice(s); 2D HD95 averaged over {len(both)}"
                        if one:
                            note += f" ({one} with one side empty)"
                        rows.append(_row("slice-drop", case, name_m, t, name, dice=d,
                                         hd95=float(np.mean(hds)) if hds else float("nan"),
                                         note=f"{empty}; {note}" if empty else note))
        return rows

    return _run_cases(ev, folders, case)


# ---------------------------------------------------------------------------------- LAX holdout

def lax_holdout_protocol(ev: Evaluator, folders: list[Path], frames: str = "ed-es", factor: int = 5) -> list[dict]:
    """For each LAX view in turn: guide with the others, score the reconstruction on its plane."""
    def case(n: int, folder: Path) -> list[dict]:
        rows: list[dict] = []
        study = _read_case(ev, folder)
        case = _case_name(study, Path(folder))
        if not study.lax:
            raise InputError(folder, "no LAX view: the lax-holdout protocol needs at least one")
        frame_list = frames_to_score(study, frames)
        ev.echo(f"[{n + 1}/{len(folders)}] {case}: views {sorted(study.lax)}, frames {frame_list}")
        # structures each view's label map holds in some frame: a structure the view never shows is not scored
        present = {v: set(np.unique(lab.data).tolist()) for v, lab in study.lax_labels.items()}
        for method in ev.methods:
            shared = None  # methods that ignore the LAX views give the same volume for every held-out view
            for held in study.lax:
                others = [v for v in study.lax if v != held]
                # With alignment every method's slices move with the guiding views' estimate (the
                # held-out view plays no part), so nothing is shared across held-out views.
                # methods that read the LAX views (the others guide): lag, fusion, and with --adapt the
                # priors, which adapt on the guiding views' images (never on the held-out one)
                method_class = get_method(method)
                guided = method_class.guided_by_lax or bool(ev.config.adapt and method_class.adaptable)
                if guided or shared is None or ev.align != "off":
                    rec = ev.run(study, method, factor, frame_list,
                                 lax_views=others if guided or ev.align != "off" else None)
                    if not guided and ev.align == "off":
                        shared = rec
                else:
                    rec = shared
                affine, shape = rec.normalised.affine, rec.normalised.spatial_shape
                op = LaxOperator.for_view(affine, shape, study.lax[held])
                if op.num_valid == 0:
                    continue
                valid = op.valid.numpy().astype(bool)
                for i, t in enumerate(frame_list):
                    dense = rec.normalised.data[..., i]
                    sampled = op.sample(torch.from_numpy(np.ascontiguousarray(dense, np.float32))).numpy()
                    image = lax_frame(study.lax[held], t, study.num_frames)
                    rows.append(_row("lax-holdout", case, method, t, f"lax_{held}",
                                     ncc=masked_ncc(sampled, image, valid), ssim=masked_ssim(sampled, image, valid),
                                     seconds=rec.seconds_per_frame[i], peak_mb=rec.peak_memory_mb,
                                     note=f"guided by {','.join(others)}" if guided else ""))
                    if n == 0 and i == 0:
                        ev.figures.setdefault("lax", {})[(held, method)] = (image, sampled, valid, None)
                        ev.figures.setdefault("lax_where", {"case": case, "frame": t})
                    if ev.segnet is None or held not in study.lax_labels:
                        continue
                    pred = segment_array(ev.segnet, dense, affine)
                    plab = op.sample(torch.from_numpy(pred.astype(np.float32)), mode="nearest").numpy().round()
                    lab = lax_frame(study.lax_labels[held], t, study.num_frames)
                    px = tuple(float(s) for s in study.lax[held].spacing[:2])
                    for name, v in STRUCTURES.items():
                        if v not in present[held]:
                            continue  # the view's labels never show it (not cut, or not labelled): not scored
                        p, r = (plab == v) & valid, (lab == v) & valid
                        d, h, empty = overlap_scores(p, r, px)
                        rows.append(_row("lax-holdout", case, method, t, f"{name}@{held}", dice=d, hd95=h,
                                         note=empty))
                    if n == 0 and i == 0:
                        ev.figures["lax"][(held, method)] = (image, sampled, valid, plab)
        return rows

    return _run_cases(ev, folders, case)


def lax_figure_data(study, methods_dense: dict[str, tuple[np.ndarray, np.ndarray | None]], affine: np.ndarray,
                    t: int) -> dict:
    """Figure material for `lax_overlay_figure` from dense reconstructions (phantom protocol)."""
    out = {}
    for v, view in study.lax.items():
        for m, (dense, pred) in methods_dense.items():
            op = LaxOperator.for_view(affine, dense.shape, view)
            if op.num_valid == 0:
                continue
            sampled = op.sample(torch.from_numpy(np.ascontiguousarray(dense, np.float32))).numpy()
            plab = None if pred is None else op.sample(torch.from_numpy(pred.astype(np.float32)), mode="nearest").numpy()
            out[(v, m)] = (lax_frame(view, t, study.num_frames), sampled, op.valid.numpy().astype(bool), plab)
    return out


PROTOCOLS = {"phantom": phantom_protocol, "slice-drop": slice_drop_protocol, "lax-holdout": lax_holdout_protocol}
