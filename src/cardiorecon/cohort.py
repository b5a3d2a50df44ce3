"""Cohorts: every subject, every frame, clinical numbers, meshes; spread over a Dask cluster.

Two layers (as Dask's own examples are built):

- `run_subject(path, out, options)`: one subject, alone, in any process. Read the study, align the
  SAX slices to the LAX views where both exist, reconstruct every frame (4D), segment the dense 4D
  volume, and write into `out`: the dense 4D NIfTI on the model grid and on the input's in-plane grid,
  the 4D labels on both, the LV/RV/myocardium volume curves (CSV, PNG), EDV/ESV/SV/EF and LV mass,
  surface meshes of the LV endocardium, LV epicardium and RV at ED and ES (STL, PLY), a subject HTML
  page, `plan.json`, `result.json`, and last, atomically, the marker `done.json`.
- `run_cohort(data, out, options, workers | scheduler)`: the runner. It only maps `run_subject` over
  the subjects (one Dask task each) on a LocalCluster sized to the machine or an existing scheduler,
  skips subjects whose marker exists for the same options, records a failing subject with its error
  and goes on, shows a progress bar with the time left, and writes `cohort.csv` (rewritten while
  subjects finish, at most every 30 s, and at the end) and `cohort.html`. Models are loaded once per
  worker process (`load_models` caches them by weights and device).

4D consistency of the segmentation: `cine_segmentation.segment_4d` (per frame by default, by
measurement). The reconstruction reuses frames where the method does: `fusion`'s temporal term, and
for `lag` an optional warm start from the previous frame (`lag_warm`, off by default by measurement).
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cardiorecon.cine_segmentation import Temporal, class_probabilities, labels_over_time, segment_4d  # noqa: F401
from cardiorecon.errors import CardioReconError, InputError

MARKER = "done.json"
CSV_EVERY_S = 30.0  # cohort.csv is rewritten at most this often while a cohort runs, and at the end
RESULT = "result.json"
FAILED = "failed.json"

COLUMNS = ["subject", "status", "qc", "qc_reasons", "qc_score", "method", "frames", "ed_frame", "es_frame", "lv_edv_ml", "lv_esv_ml", "lv_sv_ml",
           "lv_ef", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef", "mesh_max_error_pct",
           "meshes_watertight", "seconds", "seconds_per_frame", "peak_mb", "device", "worker", "models_loaded",
           "resumed", "path", "error"]


@dataclass(frozen=True)
class CohortOptions:
    """What to run on every subject (saved in each marker: a rerun with other options redoes the subject)."""

    method: str = "linear"
    factor: int = 5
    frames: str = "all"  # all, ed, es, an index, or comma-separated indices
    # Per frame by measurement (docs/BENCHMARKS.md, Cohorts; 3 phantoms x 25 frames, linear, current code):
    # per frame has the smallest EF errors (LV -1.1, RV +0.2 points) and RV curve RMS (3.7 mL); smoothing
    # the probabilities or the images lowers the second difference a little and flattens ED and ES
    # (LV EF error -2.3 at sigma 0.75 on the probabilities, -2.7 on the images).
    temporal: Temporal = "none"
    temporal_sigma: float = 0.75  # frames
    device: str = "cpu"  # auto, cpu, cuda (resolved on each worker)
    weights: str | None = None  # DiffAE (diffae, lag) or DMCVR (dmcvr) weights; None: shipped
    seg_weights: str | None = None
    lax_views: tuple[str, ...] | None = None
    align: str = "auto"  # auto: estimate where LAX views exist and alignment is available; off
    meshes: bool = True
    mesh_smoothing: int = 20
    torch_threads: int | None = None  # per worker; None leaves torch's setting
    lag_warm: str = "off"  # lag only: warm start of each frame from the previous one (ReconConfig.lag_warm:
    # 'off' by measurement, 'delta' agreed better with the LAX views but worse with the truth)

    def recon_config(self):
        """The reconstruction settings these options ask for (`recon.ReconConfig`)."""
        from cardiorecon.recon import ReconConfig

        return ReconConfig(lag_warm=self.lag_warm)

    def weights_needed(self) -> str | None:
        """The network the method needs ('diffae', 'dmcvr' or None), from the method table."""
        from cardiorecon.recon import get_method

        cls = get_method(self.method)
        return cls.weights_for(cls.options_for(self.recon_config()))

    def key(self) -> dict:
        """The options that change a subject's outputs."""
        d = asdict(self)
        for k in ("device", "torch_threads"):
            d.pop(k)
        from cardiorecon.recon import get_method

        if not get_method(self.method).takes("warm"):
            d.pop("lag_warm")  # no effect on this method (and older markers of the others stay valid)
        d["lax_views"] = None if self.lax_views is None else list(self.lax_views)
        return d


@dataclass
class Models:
    recon: object | None
    segnet: object
    device: str


# ----- models: loaded once per worker process -----
_MODELS: dict[tuple, Models] = {}
_MODELS_LOCK = threading.Lock()
MODEL_LOADS: Counter = Counter()  # loads per key in this process (reported per subject)


def load_models(options: CohortOptions) -> Models:
    """The reconstruction model (None for the classical methods) and the segmentation network on the
    options' device, loaded on the first call in this process and reused after."""
    from cardiorecon.device import resolve_device

    device = resolve_device(options.device)
    key = (options.method, options.weights, options.seg_weights, str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet

            from cardiorecon.models.pretrained import load_network

            kind = options.weights_needed()
            recon = None if kind is None else load_network(kind, options.weights)
            recon = None if recon is None else recon.to(device).eval()
            # the same whole-field network as `segment` unless asked otherwise (issue 25: the crop
            # network the cohort used before saw only the centre 128 mm of the working grid)
            segnet = load_segnet(options.seg_weights or DEFAULT_WINDOW_SEGNET)
            _MODELS[key] = Models(recon, segnet.to(device).eval(), str(device))
            MODEL_LOADS[key] += 1
        return _MODELS[key]


def models_loaded() -> int:
    """How many times models were loaded in this process (1 per options key when cached)."""
    return sum(MODEL_LOADS.values())


# ----- one subject -----
@dataclass
class SubjectOutputs:
    subject: str
    row: dict
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _alignment(study, options: CohortOptions, notes: list[str]):
    """The breath-hold alignment of the SAX slices to the LAX views (`align.resolve_alignment`:
    'auto' estimates it where LAX views exist), or None with a note saying why not."""
    if options.align == "off":
        return None
    if not study.lax:
        notes.append("no LAX view: the SAX slices are not aligned")
        return None
    from cardiorecon.align import resolve_alignment

    alignment = resolve_alignment(study, options.align, None if options.lax_views is None else list(options.lax_views))
    if alignment is not None:
        notes.extend(alignment.notes)
        shifts = np.asarray(alignment.sax_shifts_mm)
        notes.append(f"aligned to LAX {', '.join(alignment.lax_views)}: largest slice shift "
                     f"{float(np.abs(shifts).max()) if shifts.size else 0.0:.1f} mm")
    return alignment


def _write_json(path: Path, obj) -> Path:
    from cardiorecon.io.nifti import atomic_write

    from cardiorecon.io.nifti import json_text

    text = json_text(obj, default=_jsonable)  # NaN (EF without ES) -> null: valid JSON
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=".json")


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def run_subject(path: str | Path, out: str | Path, options: CohortOptions = CohortOptions(),
                models: Models | None = None, subject: str | None = None) -> SubjectOutputs:
    """Run one subject end to end and write its outputs into `out` (see the module docstring).

    Raises on bad input (CardioReconError naming the file); the marker is written only on success.
    """
    from cardiorecon.geometry import resample
    from cardiorecon.io import read_study
    from cardiorecon.io.nifti import atomic_write, write_csv_rows, write_nifti
    from cardiorecon.meshes import ventricle_meshes, write_mesh
    from cardiorecon.metrics.function import dense_volume_curves, function_from_curves, volume_curves
    from cardiorecon.segment import segment_slices
    from cardiorecon.memory import PeakMemory
    from cardiorecon.plan import make_plan, write_plan
    from cardiorecon.recon.pipeline import reconstruct, to_native, working_grid
    from cardiorecon.report.cohort import slices_png, subject_page, volume_curve_png, write_html
    from cardiorecon.qc import drop_lax_outside_stack
    from cardiorecon.qc_subject import subject_qc
    from cardiorecon.report.qc_page import write_thumbnail
    from cardiorecon.report.viewer import subject_viewer
    from cardiorecon.volume import Volume

    t_start = time.perf_counter()
    path, out = Path(path), Path(out)
    subject = subject or (path.name[:-7] if path.name.endswith(".nii.gz") else path.stem if path.is_file() else path.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    notes: list[str] = []
    if options.torch_threads:
        import torch

        torch.set_num_threads(options.torch_threads)
    with PeakMemory() as mem:
        models = models or load_models(options)
        study = read_study(path)
        notes.extend(drop_lax_outside_stack(study))  # issue 27: a LAX view that misses the stack is named, ignored
        alignment = _alignment(study, options, notes)
        frames = study.resolve_frames(str(options.frames))
        config = options.recon_config()
        lax_views = None if options.lax_views is None else list(options.lax_views)
        plan = make_plan(study, *working_grid(models.recon, config), alignment if alignment is not None else "off",
                         lax_views)
        rec = reconstruct(study, options.method, factor=options.factor, frames=frames, lax_views=lax_views,
                          model=models.recon, config=config, plan=plan)
        notes.extend(rec.notes)
        circular = len(frames) == study.num_frames
        files: list[Path] = []
        m = options.method
        native = to_native(rec, study)
        if getattr(models.segnet.config, "inference", None) == "window":
            # whole-field network: the dense volume on the input's own in-plane grid, segmented as
            # `segment` segments the acquired slices, volumes over the acquired stack's extent
            native_labels = segment_slices(native.data, native.affine, models.segnet)
            native_label_vol = Volume(native_labels, native.affine, {"frames": frames, "segmentation": "segnet"})
            label_vol = resample(native_label_vol, rec.volume.affine, rec.volume.spatial_shape, order=0)
            labels, label_affine = native_labels, native.affine
            spacing = native.spacing.tolist()
            curves = dense_volume_curves(labels, spacing, float(study.sax.spacing[2]))
        else:  # a crop network (--seg-weights segnet_tiny): the working grid, as before
            labels = segment_4d(models.segnet, rec.normalised.data, options.temporal, options.temporal_sigma,
                                circular, affine=rec.normalised.affine, notes=notes)
            label_vol = Volume(labels, rec.volume.affine, {"frames": frames, "segmentation": "segnet"})
            # labels on the same native grid (nearest; zero outside the working grid)
            native_label_vol = resample(label_vol, native.affine, native.spatial_shape, order=0)
            label_affine, spacing = rec.volume.affine, rec.volume.spacing.tolist()
            curves = volume_curves(labels, spacing)
        # LV mass from the myocardium curve: the same extent as the volumes
        fn = function_from_curves(curves, one_frame_is_ed=frames == [study.ed_frame])
        # one frame (--frames ed): no ES, so ESV/SV/EF stay blank (metrics.function_from_curves)
        phases = {k: fn[f"{k}_index"] for k in ("ed", "es") if fn[f"{k}_index"] is not None}
        ed, es = (frames[phases[k]] if k in phases else "" for k in ("ed", "es"))
        if not phases:  # one frame that is not ED (--frames es, an index): its meshes by frame number
            phases = {f"frame{frames[0]}": 0}
        files.append(write_plan(plan, out))
        files.append(write_nifti(rec.volume, out / f"recon_{m}.nii.gz"))
        files.append(write_nifti(native, out / f"recon_{m}_native.nii.gz"))
        files.append(write_nifti(label_vol, out / f"seg_{m}.nii.gz"))
        files.append(write_nifti(native_label_vol, out / f"seg_{m}_native.nii.gz"))

        interval = study.sax.meta.get("frame_interval")
        times = [t * float(interval) if interval else float(t) for t in frames]
        curve_rows = [{"frame": t, "time_ms": round(times[i], 3) if interval else "",
                       **{k: round(float(v[i]), 4) for k, v in curves.items()}} for i, t in enumerate(frames)]
        files.append(write_csv_rows(out / "volumes.csv", curve_rows, list(curve_rows[0])))
        curve_png = volume_curve_png(times if interval else frames, curves, phases.get("ed"), phases.get("es"),
                                     f"{subject}: {m}, {len(frames)} frames",
                                     xlabel="time from the trigger (ms)" if interval else "frame")
        files.append(atomic_write(out / "volumes.png", lambda tmp: Path(tmp).write_bytes(curve_png), suffix=".png"))

        mesh_rows = []
        if options.meshes:
            for phase, idx in phases.items():
                for name, sm in ventricle_meshes(labels[..., idx], label_affine,
                                                 smoothing_iterations=options.mesh_smoothing).items():
                    files.extend(write_mesh(sm.mesh, out / "meshes" / f"{name}_{phase}"))
                    mesh_rows.append({**sm.summary(), "phase": phase.upper()})
        errors = [abs(r["volume_error_pct"]) for r in mesh_rows]
        row = {"subject": subject, "status": "done", "method": m, "frames": len(frames), "ed_frame": ed,
               "es_frame": es, **{k: fn[k] for k in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef", "lv_mass_g",
                                                      "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef")},
               "mesh_max_error_pct": max(errors) if errors else "",
               "meshes_watertight": all(r["watertight"] for r in mesh_rows) if mesh_rows else "",
               "seconds_per_frame": float(np.mean(rec.seconds_per_frame)), "device": models.device,
               "worker": os.getpid(), "models_loaded": models_loaded(), "resumed": False, "path": str(path),
               "error": ""}
        # QC, thumbnail, slices and viewer on the working grid, with the reconstruction
        work_labels = label_vol.data if label_vol.data.ndim == 4 else label_vol.data[..., None]
        first = next(iter(phases.values()))
        seg_grid = (native.data, native.affine, labels) if label_affine is native.affine else None
        qc_report = subject_qc(study, rec, work_labels, curves, fn, frames, models.segnet,  # issue 27
                               seg_grid=seg_grid)
        row.update(qc_report.row())
        files.append(write_thumbnail(out, rec.normalised.data[..., first], work_labels[..., first]))
        slice_png = slices_png(rec.normalised.data, work_labels, {k.upper(): v for k, v in phases.items()})
    row["seconds"] = time.perf_counter() - t_start
    row["peak_mb"] = mem.peak_mb
    rel = [str(Path(f).relative_to(out)) for f in files]
    page = subject_page(subject, row, curve_png, slice_png, mesh_rows, rel, notes, qc=qc_report.to_json(),
                        viewer=subject_viewer(out, study, rec, work_labels, frames, m, first))
    files.append(write_html(out / "subject.html", page))
    result = {"row": row, "options": options.key(), "qc": qc_report.to_json(), "curves": curve_rows,
              "meshes": mesh_rows, "notes": notes,
              "files": rel + ["subject.html"]}
    _write_json(out / RESULT, result)
    (out / FAILED).unlink(missing_ok=True)
    _write_json(out / MARKER, {"row": row, "options": options.key()})  # last: the subject is done
    return SubjectOutputs(subject, row, [str(f) for f in files], notes)


def _failed_row(subject: str, path: Path, options: CohortOptions, error: str, seconds: float = 0.0) -> dict:
    return {**{c: "" for c in COLUMNS}, "subject": subject, "status": "failed", "qc": "fail",
            "qc_reasons": "the run failed", "method": options.method,
            "path": str(path), "seconds": seconds, "resumed": False, "error": error}


def subject_task(path: str, out: str, options: CohortOptions, subject: str) -> dict:
    """One Dask task: `run_subject`, with any failure turned into a row (and failed.json) instead
    of an exception, so that one bad subject never stops the others."""
    t0 = time.perf_counter()
    try:
        return run_subject(path, out, options, subject=subject).row
    except Exception as exc:  # noqa: BLE001 - recorded, never raised: the cohort goes on
        message = str(exc) if isinstance(exc, CardioReconError) else f"{type(exc).__name__}: {exc}"
        message = " ".join(message.split())
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
            _write_json(Path(out) / FAILED, {"error": message, "traceback": traceback.format_exc()})
        except Exception:  # noqa: BLE001 - the row still carries the error
            pass
        return _failed_row(subject, Path(path), options, message, time.perf_counter() - t0)


# ----- the cohort -----
def discover(data: Sequence[str | Path]) -> tuple[list[tuple[str, Path]], list[tuple[Path, str]]]:
    """(subject name, path) of every study under `data`, names made unique; and paths skipped with why."""
    from cardiorecon.io.discover import discover_studies

    found = discover_studies(list(data))
    paths, skipped = found.studies, [(Path(p), why) for p, why in found.skipped]
    names: list[tuple[str, Path]] = []
    seen: Counter = Counter()
    for p in paths:
        p = Path(p)
        base = p.name[:-7] if p.name.endswith(".nii.gz") else (p.stem if p.is_file() else p.name)
        seen[base] += 1
        names.append((base if seen[base] == 1 else f"{base}_{seen[base]}", p))
    return names, skipped


def write_cohort_csv(rows: list[dict], path: Path) -> Path:
    """cohort.csv; a NaN (no ES with one frame: ESV, SV, EF) is a blank cell."""
    from cardiorecon.io.nifti import write_csv_rows

    blank = [{k: ("" if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    return write_csv_rows(path, blank, COLUMNS)


def read_marker(folder: Path, options: CohortOptions) -> dict | None:
    """The row of a subject already done with these options, else None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("options") != json.loads(json.dumps(options.key())):
        return None
    return {**saved["row"], "resumed": True}


def default_workers(num_subjects: int) -> int:
    """One single-threaded worker per core, no more than there are subjects."""
    return max(1, min(num_subjects, os.cpu_count() or 1))


@dataclass
class CohortRun:
    rows: list[dict]
    csv: Path
    html: Path
    done: int
    failed: int
    skipped: int  # already done (marker found) and not rerun
    seconds: float


def run_cohort(data: Sequence[str | Path], out: str | Path, options: CohortOptions = CohortOptions(),
               workers: int | None = None, scheduler: str | None = None, progress: bool = True,
               echo: Callable[[str], None] = print) -> CohortRun:
    """Run every subject under `data` (one Dask task each) and write cohort.csv and cohort.html.

    workers: LocalCluster size (default: one per core, at most one per subject), each worker one
    thread with `cores // workers` torch threads unless options.torch_threads says; scheduler:
    the address of an existing cluster (tcp://HOST:PORT), which must see the same paths.
    """
    from tqdm.auto import tqdm

    from cardiorecon.report.cohort import cohort_page, write_html

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    subjects, skipped_paths = discover(data)
    if not subjects and not skipped_paths:
        raise InputError(Path(str(data[0])) if data else None, "no subject found")
    rows: dict[str, dict] = {}
    todo = []
    for name, path in subjects:
        row = read_marker(out / "subjects" / name, options)
        if row is not None:
            rows[name] = row
        else:
            todo.append((name, path))
    for path, why in skipped_paths:
        rows[f"skipped:{path}"] = {**_failed_row(path.name, path, options, why), "status": "skipped"}
    resumed = len(subjects) - len(todo)
    if resumed:
        echo(f"{resumed} subject(s) already done (markers in {out / 'subjects'}): skipped")
    csv_path = out / "cohort.csv"

    def ordered() -> list[dict]:
        return [rows[n] for n, _ in subjects if n in rows] + [r for k, r in rows.items() if k.startswith("skipped:")]

    if todo:
        from distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler:
            client = Client(scheduler)
            n_workers = len(client.scheduler_info().get("workers", {})) or 1
        else:
            n_workers = workers or default_workers(len(todo))
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)
            import warnings

            from cardiorecon.errors import use_one_line_warnings, warning_line

            if warnings.formatwarning is warning_line:  # the console script's one-line warnings, in its workers too
                client.run(use_one_line_warnings)
        if options.torch_threads is None and not scheduler:
            import dataclasses

            options = dataclasses.replace(options, torch_threads=max(1, (os.cpu_count() or 1) // n_workers))
        echo(f"cohort: {len(todo)} subject(s) to run on {n_workers} worker(s)"
             + (f" of the cluster at {scheduler}" if scheduler else ""))
        try:
            futures = {}
            for name, path in todo:
                fut = client.submit(subject_task, str(path), str(out / "subjects" / name), options, name,
                                    key=f"subject-{name}-{time.time_ns()}", pure=False)
                futures[fut] = (name, path)
            bar = tqdm(total=len(todo), unit="subject", desc="cohort", disable=not progress)
            last_write = 0.0
            for fut in as_completed(futures):
                name, path = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by memory: recorded
                    row = _failed_row(name, path, options, f"{type(exc).__name__}: {exc}")
                rows[name] = row
                if row["status"] != "done":
                    echo(f"failed: {name}: {row['error']}")
                if time.monotonic() - last_write > CSV_EVERY_S:  # not after every one of 10^4 subjects
                    write_cohort_csv(ordered(), csv_path)
                    last_write = time.monotonic()
                bar.update(1)
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    final = ordered()
    write_cohort_csv(final, csv_path)
    done = sum(r["status"] == "done" for r in final)
    failed = sum(r["status"] == "failed" for r in final)
    intro = (f"{len(subjects)} subject(s) from {', '.join(map(str, data))}; method {options.method}, factor "
             f"{options.factor}, frames {options.frames}, temporal {options.temporal}")
    html_path = write_html(out / "cohort.html", cohort_page(final, COLUMNS, "cardiorecon cohort", intro, out))
    return CohortRun(final, csv_path, html_path, done, failed, resumed, time.perf_counter() - t0)


__all__ = ["COLUMNS", "CohortOptions", "CohortRun", "MARKER", "Models", "SubjectOutputs", "discover", "load_models",
           "read_marker", "run_cohort", "run_subject", "segment_4d", "subject_task"]
