"""`Evaluator`: what every evaluation protocol needs (the networks the methods need, looked up in the
method table; the segmentation network; the settings; the plans of the cases) and `run`, which
reconstructs one case with one method on its plan and keeps the material of the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cardiorecon.align import resolve_alignment
from cardiorecon.memory import PeakMemory
from cardiorecon.models.pretrained import DEFAULT_DMCVR, load_network, resolve_weights
from cardiorecon.plan import Plan, make_plan
from cardiorecon.preprocess import region_share
from cardiorecon.recon import ReconConfig, get_method, reconstruct
from cardiorecon.recon.pipeline import Reconstruction, working_grid, write_reconstruction
from cardiorecon.report.artefacts import indicators
from cardiorecon.report.provenance import describe_data, weights_entry
from cardiorecon.report.viewer import keep_evaluation, keep_evaluation_labels
from cardiorecon.segment import DEFAULT_WINDOW_SEGNET, load_segnet
from cardiorecon.volume import Study

#: How the provenance names each network (the methods that use it).
WEIGHTS_LABELS = {"diffae": "diffae, lag", "dmcvr": "dmcvr"}


@dataclass
class Evaluator:
    """What every protocol needs: the networks the methods need (looked up in the method table), the
    segmentation network, the reconstruction settings, and where to report progress."""

    methods: list[str]
    model: object | None = None  # the DiffAE (methods whose weights are 'diffae': diffae, lag)
    segnet: object | None = None
    dmcvr: object | None = None  # the DMCVR model (methods whose weights are 'dmcvr': dmcvr, lag --init dmcvr)
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
    plans: dict = field(default_factory=dict)  # the plan of each case and set of guiding views

    def weights_needed(self, method: str) -> str | None:
        """'diffae', 'dmcvr' or None: the network `method` needs with this evaluator's settings."""
        cls = get_method(method)
        return cls.weights_for(cls.options_for(self.config))

    def model_for(self, method: str):
        """The network `method` runs with; methods without weights get the loaded model anyway, so that
        every method works on the same grid."""
        kind = self.weights_needed(method)
        if kind is None:
            return self.model if self.model is not None else self.dmcvr
        return self.dmcvr if kind == "dmcvr" else self.model

    def load(self, weights=None, dmcvr_weights=None, seg_weights=None, segmentation: bool = True) -> "Evaluator":
        """Load what the methods need (None: the shipped weights) and the segmentation network."""
        # each network the methods need, once: (attribute, weights file, shipped default)
        sources = {"diffae": ("model", weights, None), "dmcvr": ("dmcvr", dmcvr_weights, DEFAULT_DMCVR)}
        needed = {self.weights_needed(m) for m in self.methods}
        for kind, (attribute, path, default) in sources.items():
            if kind not in needed:
                continue
            setattr(self, attribute, load_network(kind, path))
            stem = resolve_weights(path) if default is None else resolve_weights(path, default=default)
            self.weights.append(weights_entry(WEIGHTS_LABELS[kind], stem, getattr(self, attribute)))
            if default is not None:  # DMCVR's morphology segmenter sits beside its decoder
                self.weights.append(weights_entry(f"{WEIGHTS_LABELS[kind]} morphology segmenter", stem.parent / "segnet"))
        if segmentation:
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
        views = tuple(study.lax) if lax_views is None else tuple(lax_views)
        key = (str(study.meta.get("subject") or study.meta.get("source") or id(study)), views)
        cache = self.figures.setdefault("alignment", {})
        if key not in cache:
            cache[key] = resolve_alignment(study, self.align, list(views))
        return cache[key]

    def plan(self, study: Study, model, lax_views: list[str] | None = None, align: str | None = None) -> Plan:
        """The study's plan on `model`'s working grid, aligned with `lax_views` (default all) under
        `align` (default `self.align`): made once per case, set of views and grid."""
        aligned = (align or self.align) != "off"
        grid = working_grid(model, self.config)
        views = tuple(study.lax) if lax_views is None else tuple(lax_views)
        key = (str(study.meta.get("subject") or study.meta.get("source") or id(study)), id(study.sax), views,
               aligned, grid)
        if key not in self.plans:
            alignment = self.alignment(study, lax_views) if aligned else "off"
            self.plans[key] = make_plan(study, *grid, alignment, lax_views)
        return self.plans[key]

    def run(self, study: Study, method: str, factor: int, frames: list[int], lax_views: list[str] | None = None,
            align: str | None = None) -> Reconstruction:
        model = self.model_for(method)
        case = str(study.meta.get("subject") or Path(str(study.meta.get("source") or "case")).name)
        self.data.setdefault(case, describe_data(study))
        before_mb = PeakMemory.rss_mb()
        plan = self.plan(study, model, lax_views, align)
        rec = reconstruct(study, method, factor=factor, frames=frames, lax_views=lax_views, model=model,
                          config=self.config, progress=self.progress, plan=plan)
        # Memory of this method alone: the peak above what the process held before it (other methods'
        # models, the data), plus the weights this method uses; a method without weights uses none.
        weights_mb = 0.0 if self.weights_needed(method) is None or model is None else \
            sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        rec = dataclasses.replace(rec, peak_memory_mb=max(rec.peak_memory_mb - before_mb, 0.0) + weights_mb)
        keep_evaluation(self.figures, case, study, rec, method, self.figure_cases)  # issue 27: the report's viewer
        if rec.grid.region is not None and "heart_region" not in self.data[case]:
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
        keep_evaluation_labels(self.figures, case, frame, method, pred, truth_labels)  # issue 27: the viewer
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


__all__ = ["Evaluator", "WEIGHTS_LABELS"]
