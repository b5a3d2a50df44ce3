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
from cardiorecon.metrics.image import masked_ncc, psnr, ssim
from cardiorecon.metrics.seg import STRUCTURES, dice, ejection_fraction, hd95, volume_ml
from cardiorecon.recon import ReconConfig, reconstruct
from cardiorecon.recon.lax import LaxOperator
from cardiorecon.recon.pipeline import Reconstruction, lax_frame, write_reconstruction
from cardiorecon.segment import segment_array
from cardiorecon.volume import LABELS, Study, Volume

COLUMNS = ["protocol", "case", "method", "frame", "structure", "dice", "hd95", "ssim", "psnr", "ncc",
           "volume_ml", "true_volume_ml", "ef", "true_ef", "ef_error", "seconds", "peak_mb", "note"]
#: Pseudo-method: the segmentation network applied to the true dense image (its own error alone).
TRUTH_IMAGE = "truth-image"


@dataclass
class Evaluator:
    """What every protocol needs: the DiffAE (for diffae/lag), the segmentation network, the
    reconstruction settings, and where to report progress."""

    methods: list[str]
    model: object | None = None  # the DiffAE (diffae, lag)
    segnet: object | None = None
    dmcvr: object | None = None  # the DMCVR model (dmcvr)
    config: ReconConfig = ReconConfig()
    progress: bool = True
    echo: Callable[[str], None] = print
    save_to: Path | None = None  # write every reconstruction (NIfTI, model and input grid) under here
    figures: dict = field(default_factory=dict)  # material kept for the report figures
    align: str = "off"  # breath-hold alignment before every method: auto, on or off (cardiorecon.align)
    weights: list[dict] = field(default_factory=list)  # provenance: name, file, hash of the weights loaded
    data: dict = field(default_factory=dict)  # provenance: {case: describe_data(study)}
    figure_cases: int = 3  # cases whose every frame and slice the report's scroller shows
    failures: list[dict] = field(default_factory=list)  # cases that failed: case, folder, error
    lax_thickness_mm: float | None = None  # override of every LAX view's slice thickness (--lax-thickness)
    on_rows: Callable[[list[dict]], None] | None = None  # called with the rows so far after each case

    def load(self, weights=None, dmcvr_weights=None, seg_weights=None, segmentation: bool = True) -> "Evaluator":
        """Load what the methods need (None: the shipped weights) and the segmentation network."""
        from cardiorecon.models.pretrained import DEFAULT_DMCVR, resolve_weights
        from cardiorecon.report.provenance import weights_entry

        if set(self.methods) & {"diffae", "lag"}:
            from cardiorecon.models.pretrained import load_diffae

            self.model = load_diffae(weights)
            self.weights.append(weights_entry("diffae, lag", resolve_weights(weights), self.model))
        if "dmcvr" in self.methods:
            from cardiorecon.models.pretrained import load_dmcvr

            self.dmcvr = load_dmcvr(dmcvr_weights)
            stem = resolve_weights(dmcvr_weights, default=DEFAULT_DMCVR)
            self.weights.append(weights_entry("dmcvr", stem, self.dmcvr))
            self.weights.append(weights_entry("dmcvr morphology segmenter", stem.parent / "segnet"))
        if segmentation:
            from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet

            # the whole-field segmenter by default (issue 15); --seg-weights picks another
            self.segnet = load_segnet(DEFAULT_WINDOW_SEGNET if seg_weights is None else seg_weights)
            p = DEFAULT_WINDOW_SEGNET if seg_weights is None else Path(seg_weights)
            stems = [p / "model", p / "weights" / "model"] if p.is_dir() else [p.with_suffix("")]
            stem = next((s for s in stems if s.with_suffix(".safetensors").is_file()), stems[0])
            self.weights.append(weights_entry("segmentation (scoring)", stem, self.segnet))
        return self

    def alignment(self, study: Study, lax_views: list[str] | None = None):
        """The study's breath-hold alignment with `lax_views` (default all) under `self.align`,
        estimated once per case and set of views and kept for the report."""
        from cardiorecon.align import resolve_alignment

        views = tuple(study.lax) if lax_views is None else tuple(lax_views)
        key = (str(study.meta.get("subject") or study.meta.get("source") or id(study)), views)
        cache = self.figures.setdefault("alignment", {})
        if key not in cache:
            cache[key] = resolve_alignment(study, self.align, list(views))
        return cache[key]

    def run(self, study: Study, method: str, factor: int, frames: list[int], lax_views: list[str] | None = None,
            align: str | None = None) -> Reconstruction:
        model = self.dmcvr if method == "dmcvr" else self.model
        if method in ("nearest", "linear", "cubic", "register", "fusion", "selfsr"):  # on the same model grid as the others
            model = self.model if self.model is not None else self.dmcvr
        from cardiorecon.recon.pipeline import PeakMemory
        from cardiorecon.report.provenance import describe_data

        case = str(study.meta.get("subject") or Path(str(study.meta.get("source") or "case")).name)
        self.data.setdefault(case, describe_data(study))
        before_mb = PeakMemory.rss_mb()
        alignment = self.alignment(study, lax_views) if (align or self.align) != "off" else "off"
        rec = reconstruct(study, method, factor=factor, frames=frames, lax_views=lax_views, model=model,
                          config=self.config, progress=self.progress, align=alignment)
        # Memory of this method alone: the peak above what the process held before it (other methods'
        # models, the data), plus the weights this method uses; a classical method uses none.
        weights_mb = 0.0 if method in ("nearest", "linear", "cubic", "register", "fusion", "selfsr") or model is None else \
            sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        rec = dataclasses.replace(rec, peak_memory_mb=max(rec.peak_memory_mb - before_mb, 0.0) + weights_mb)
        if rec.grid.region is not None and "heart_region" not in self.data[case]:
            from cardiorecon.preprocess import region_share

            entry = rec.grid.region.to_json()
            if study.sax_labels is not None:  # scoring only: how much of the labelled heart the region holds
                entry["labelled_share"] = region_share(rec.grid.region, study.sax_labels)
            self.data[case]["heart_region"] = entry
            share = entry.get("labelled_share")
            self.echo(f"  heart region {entry['size_mm']:.0f} mm ({entry['source']})"
                      + ("" if share is None else f", {100 * share:.1f} % of the labelled heart inside"))
        for t, res in rec.lag.items():  # the report's loss curves
            key = (case, ",".join(rec.lax_views))
            self.figures.setdefault("lag_curves", {}).setdefault(key, {})[t] = res.history
        if self.save_to is not None:
            write_reconstruction(rec, Path(self.save_to) / str(study.meta.get("subject", "case")), study, native=True)
        return rec

    def keep_slices(self, case: str, frame, method: str, dense: np.ndarray, pred: np.ndarray | None,
                    truth: np.ndarray, truth_labels: np.ndarray | None, slices: list[int], most: int = 12) -> None:
        """Keep up to `most` of `slices` (the new ones) of this case and frame for the report's slice and
        frame scroller: the method's (X, Y, Z) volume and segmentation beside the reference ones. Only
        the first `figure_cases` cases are kept. Artefact indicators are kept for every case."""
        from cardiorecon.report.artefacts import indicators

        self.figures.setdefault("artefacts", {})[(case, str(frame), method)] = indicators(dense, pred, slices)
        kept = self.figures.setdefault("scroller", {})
        if case not in kept and len(kept) >= self.figure_cases:
            return
        picks = [slices[int(i)] for i in np.unique(np.linspace(0, len(slices) - 1, min(most, len(slices))).round())]
        entry = kept.setdefault(case, {"slices": picks, "frames": {}})
        picks = entry["slices"]

        def take(a):
            return None if a is None else np.ascontiguousarray(a[:, :, picks])

        f = entry["frames"].setdefault(frame, {"truth": take(truth), "truth_labels": take(truth_labels), "methods": {}})
        f["methods"][method] = (take(dense), take(pred))


def frames_to_score(study: Study, frames: str) -> list[int]:
    """'ed-es' (ED and ES where known, else ED, else frame 0 with a note), 'ed', 'es', 'all', an index,
    or a comma-separated list of indices."""
    if frames == "ed-es":
        known = [t for t in (study.ed_frame, study.es_frame) if t is not None]
        if known:
            return known
        study.meta.setdefault("notes", []).append("ED and ES unknown: frame 0 scored")
        return [0]
    if "," in frames:
        try:
            return study.resolve_frames([int(x) for x in frames.split(",") if x.strip()])
        except ValueError as exc:
            raise InputError(study.meta.get("source"), f"--frames {frames!r}: {exc}") from exc
    return study.resolve_frames(frames)


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


def _case_name(study: Study, folder: Path) -> str:
    return str(study.meta.get("subject") or folder.name)


def _segment(ev: Evaluator, dense: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray | None:
    return None if ev.segnet is None else segment_array(ev.segnet, dense, affine)


def _structure_rows(protocol, case, method, frame, pred, ref, spacing, structures=STRUCTURES, **extra):
    rows = []
    for name, v in structures.items():
        p, r = pred == v, ref == v
        rows.append(_row(protocol, case, method, frame, name, dice=dice(p, r), hd95=hd95(p, r, spacing),
                         volume_ml=volume_ml(pred, v, spacing), true_volume_ml=volume_ml(ref, v, spacing), **extra))
    return rows


def _lax_ncc(study: Study, dense: np.ndarray, affine: np.ndarray, t: int, views: list[str] | None = None
             ) -> dict[str, float]:
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
        study = read_study(folder, lax_thickness_mm=ev.lax_thickness_mm)
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
                ncc = _lax_ncc(study, dense, dense_affine, t)
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

    def sub(vol: Volume | None) -> Volume | None:
        return None if vol is None else Volume(vol.data[:, :, keep], affine, dict(vol.meta))

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
        study = read_study(folder, lax_thickness_mm=ev.lax_thickness_mm)
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
                        hds = [hd95(p[..., j], r[..., j], spacing[:2]) for j in range(len(scored))
                               if p[..., j].any() or r[..., j].any()]
                        rows.append(_row("slice-drop", case, name_m, t, name, dice=dice(p, r),
                                         hd95=float(np.mean(hds)) if hds else 0.0,
                                         note=f"{len(scored)} annotated dropped slice(s); 2D HD95 averaged"))
        return rows

    return _run_cases(ev, folders, case)


# ---------------------------------------------------------------------------------- LAX holdout

def _masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map inside `mask` after matching a's intensities to b's there."""
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    m = mask.astype(bool)
    if m.sum() < 50:
        return float("nan")
    x, y = a.astype(np.float64), b.astype(np.float64)
    A = np.stack([x[m], np.ones(m.sum())], 1)
    coef, *_ = np.linalg.lstsq(A, y[m], rcond=None)
    x = x * coef[0] + coef[1]
    lo, hi = np.percentile(y[m], [1, 99])
    rng = max(hi - lo, 1e-6)
    _, smap = structural_similarity(x, y, data_range=rng, full=True)
    inner = ndimage.binary_erosion(m, iterations=3)
    return float(smap[inner if inner.any() else m].mean())


def lax_holdout_protocol(ev: Evaluator, folders: list[Path], frames: str = "ed-es", factor: int = 5) -> list[dict]:
    """For each LAX view in turn: guide with the others, score the reconstruction on its plane."""
    def case(n: int, folder: Path) -> list[dict]:
        rows: list[dict] = []
        study = read_study(folder, lax_thickness_mm=ev.lax_thickness_mm)
        case = _case_name(study, Path(folder))
        if not study.lax:
            raise InputError(folder, "no LAX view: the lax-holdout protocol needs at least one")
        frame_list = frames_to_score(study, frames)
        ev.echo(f"[{n + 1}/{len(folders)}] {case}: views {sorted(study.lax)}, frames {frame_list}")
        for method in ev.methods:
            shared = None  # methods that ignore the LAX views give the same volume for every held-out view
            for held in study.lax:
                others = [v for v in study.lax if v != held]
                # With alignment every method's slices move with the guiding views' estimate (the
                # held-out view plays no part), so nothing is shared across held-out views.
                # methods that read the LAX views (the others guide): lag, fusion, and with --adapt the
                # priors, which adapt on the guiding views' images (never on the held-out one)
                guided = method in ("lag", "fusion") or bool(ev.config.adapt and method in ("diffae", "dmcvr"))
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
                                     ncc=masked_ncc(sampled, image, valid), ssim=_masked_ssim(sampled, image, valid),
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
                        p, r = (plab == v) & valid, (lab == v) & valid
                        rows.append(_row("lax-holdout", case, method, t, f"{name}@{held}", dice=dice(p, r),
                                         hd95=hd95(p, r, px)))
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
