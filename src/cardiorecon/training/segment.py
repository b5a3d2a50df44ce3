"""Training the SAX segmentation network on phantom slices and partially labelled real slices.

Each slice carries the set of classes its annotation delineates. A pixel labelled c (c > 0, c
annotated) is class c; a pixel labelled 0 is "one of the classes not annotated on this slice",
background included. The loss is the cross-entropy of that event: -log sum_{k in U} p_k, with U =
{background} for fully labelled slices (the ordinary cross-entropy) and U = {background, RV
cavity} on Sunnybrook slices, whose contours delineate the LV only. Nothing is learned from slices
without contours.

Every random choice of step s comes from a generator seeded by (seed, s): a run resumed from its
last checkpoint continues as an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cardiorecon.autoencoder import prepare_study
from cardiorecon.io import read_study
from cardiorecon.io.nifti import atomic_write
from cardiorecon.metrics.seg import STRUCTURES, dice
from cardiorecon.models.config import config_to_json, save_weights
from cardiorecon.models.segnet import SegConfig, SegNet
from cardiorecon.training.checkpoint import load_state, save_state
from cardiorecon.training.data import augment_pair, subject_folders
from cardiorecon.training.diffae import step_generator
from cardiorecon.volume import LABELS, Study

ALL_CLASSES = tuple(v for v in LABELS.values() if v)


@dataclass(frozen=True)
class SegTrainConfig:
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_steps: int = 3000
    real_fraction: float = 0.25  # share of each batch drawn from partially labelled (real) slices
    seed: int = 0
    checkpoint_every: int = 250
    frame_stride: int = 2  # phantom cines: every 2nd frame is enough
    max_rotation_deg: float = 15.0
    flip_prob: float = 0.0  # flips would swap the RV to the wrong side of the septum


@dataclass
class SegBank:
    images: np.ndarray  # (N, H, W) float16 in [-1, 1]
    labels: np.ndarray  # (N, H, W) uint8
    known: np.ndarray  # (N, C) bool: class k delineated on this slice (background: implied)
    source: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def partial(self) -> np.ndarray:
        return ~self.known[:, 1:].all(axis=1)


def labelled_slices(study: Study) -> list[tuple[int, int, tuple[int, ...]]]:
    """(slice, frame, annotated classes) of every labelled SAX slice of a study."""
    if study.sax_labels is None:
        return []
    if "annotated" in study.meta:  # contours (Sunnybrook): per slice and frame
        return [(a["slice"], a["frame"], tuple(a["classes"])) for a in study.meta["annotated"]]
    frames = study.meta.get("labelled_frames") or list(range(study.num_frames))
    return [(z, t, ALL_CLASSES) for t in frames for z in range(study.sax.spatial_shape[2])]


def build_seg_bank(paths: list[str | Path], config: SegConfig, frame_stride: int = 1,
                   exclude: list[str] = (), progress: bool = True) -> SegBank:
    images, labels, known, source = [], [], [], []
    for folder in subject_folders(paths):
        if folder.name in set(exclude):
            continue
        study = read_study(folder)
        grid = prepare_study(study, config.pixel_spacing_mm, config.image_size)
        picks = labelled_slices(study)
        if "annotated" not in study.meta:
            picks = [p for p in picks if p[1] % frame_stride == 0 or p[1] in (study.ed_frame, study.es_frame)]
        for z, t, classes in picks:
            images.append(grid.image.data[:, :, z, t].astype(np.float16))
            labels.append(grid.labels.data[:, :, z, t].astype(np.uint8))
            k = np.zeros(config.num_classes, bool)
            k[list(classes)] = True
            known.append(k)
        source += [folder.name] * len(picks)
        if progress:
            print(f"  seg data {folder}: {len(picks)} labelled slices", flush=True)
    if not images:
        raise ValueError(f"no labelled slices under {paths}")
    return SegBank(np.stack(images), np.stack(labels), np.stack(known), source)


def partial_label_loss(logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where label 0 means 'any class not annotated on this slice' (see module)."""
    logp = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W)
    unknown = ~known.clone()
    unknown[:, 0] = True
    masked = logp.masked_fill(~unknown[:, :, None, None], float("-inf"))
    nll_zero = -torch.logsumexp(masked, dim=1)
    nll_class = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    return torch.where(labels == 0, nll_zero, nll_class).mean()


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice of the foreground classes over fully labelled slices (0 if none)."""
    if not full.any():
        return logits.sum() * 0
    p = torch.softmax(logits[full].float(), 1)[:, 1:]
    onehot = F.one_hot(labels[full], logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


def _batch(bank: SegBank, tc: SegTrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = step_generator(tc.seed, step)
    partial = np.flatnonzero(bank.partial)
    full = np.flatnonzero(~bank.partial)
    n_real = int(round(tc.batch_size * tc.real_fraction)) if len(partial) else 0
    pick_full = full[torch.randint(len(full), (tc.batch_size - n_real,), generator=g).numpy()]
    pick_real = partial[torch.randint(len(partial), (n_real,), generator=g).numpy()] if n_real else []
    idx = np.concatenate([pick_full, pick_real]).astype(int)
    x = torch.from_numpy(bank.images[idx].astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bank.labels[idx].astype(np.int64))
    x, y = augment_pair(x, y, g, tc.max_rotation_deg, tc.flip_prob)
    return x, y, torch.from_numpy(bank.known[idx])


def evaluate_bank(net: SegNet, bank: SegBank) -> dict[str, float]:
    """Mean Dice per structure over the slices of `bank` where the structure is annotated and
    present in the reference or the prediction (2D Dice of slices where both are empty is skipped)."""
    from cardiorecon.segment import predict_slices

    pred = predict_slices(net, torch.from_numpy(bank.images.astype(np.float32)).unsqueeze(1)).argmax(1).numpy()
    out = {}
    for name, v in STRUCTURES.items():
        scores = [dice(pred[i] == v, bank.labels[i] == v) for i in range(len(bank))
                  if bank.known[i, v] and ((pred[i] == v).any() or (bank.labels[i] == v).any())]
        out[name] = float(np.mean(scores)) if scores else float("nan")
    return out


def train_segnet(config: SegConfig, data: list[str | Path], out: str | Path, tc: SegTrainConfig = SegTrainConfig(),
                 exclude: list[str] = (), progress: bool = True) -> Path:
    """Train (or resume) the segmentation network; EMA-free, checkpoint every `checkpoint_every`
    steps; the final weights go to OUT/weights/model.safetensors with their config."""
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({"model": config_to_json(config), "train": config_to_json(tc),
                                      "data": [str(d) for d in data], "exclude": list(exclude)}))
    (run / "run.json").write_text(json.dumps(settings, indent=2))
    bank = build_seg_bank(list(data), config, tc.frame_stride, exclude, progress)
    print(f"training on {len(bank)} slices ({int(bank.partial.sum())} partially labelled)", flush=True)
    torch.manual_seed(tc.seed)
    net = SegNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.max_steps)
    ckpt, start = run / "checkpoints" / "last", 0
    if ckpt.with_suffix(".safetensors").is_file():
        state = load_state(ckpt)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        print(f"resumed at step {start}", flush=True)
    log_path = run / "log.csv"
    new_log = not log_path.is_file()
    with open(log_path, "a", newline="") as fh:
        log = csv.writer(fh)
        if new_log:
            log.writerow(["step", "loss", "steps_per_s", "time"])
        bar = tqdm(range(start, tc.max_steps), initial=start, total=tc.max_steps, desc="segnet", disable=not progress)
        t0, done = time.perf_counter(), 0
        net.train()
        for step in bar:
            x, y, known = _batch(bank, tc, step)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(x)
            loss = partial_label_loss(logits, y, known) + soft_dice_loss(logits, y, known[:, 1:].all(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            done += 1
            rate = done / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", it_s=f"{rate:.2f}")
            s = step + 1
            if s % 25 == 0:
                log.writerow([s, float(loss), round(rate, 3), time.strftime("%Y-%m-%dT%H:%M:%S")])
                fh.flush()
            if s % tc.checkpoint_every == 0 or s == tc.max_steps:
                save_state({"model": net.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "step": s}, ckpt)
    net.eval()
    save_weights(net, config, run / "weights" / "model", extra={"steps": tc.max_steps, "data": settings["data"]})
    return run


def write_scores(path: Path, scores: dict) -> None:
    clean = {k: {m: (v if np.isfinite(v) else None) for m, v in s.items()} for k, s in scores.items()}
    text = json.dumps(clean, indent=2)  # null: the structure is not annotated there
    atomic_write(path, lambda tmp: tmp.write_text(text), suffix=".json")


# ------------------------------------------------------------------ synthetic appearance (issue 15)
def read_ep_contours(study: Study, contour_folder: str | Path) -> Study:
    """ep_preclinical's automatic LV contours (`IM-0001-NNNN-{i,o}contour-auto.txt`, pixel x y,
    file NNNN pairs with `I0NNN.dcm`) -> `study.sax_labels` and `study.meta['annotated']`, as
    `add_sunnybrook_labels` does for manual contours."""
    import re

    from cardiorecon.io.contours import polygon_mask, read_polygon
    from cardiorecon.volume import Volume

    files = study.sax.meta.get("files")
    by_number = {}
    for z, frame_files in enumerate(files):
        for t, f in enumerate(frame_files):
            digits = re.sub(r"\D", "", Path(f).stem)
            if digits:
                by_number[int(digits)] = (z, t)
    pattern = re.compile(r"IM-\d+-(\d+)-(icontour|ocontour)-auto\.txt$")
    contours: dict[int, dict[str, np.ndarray]] = {}
    for path in sorted(Path(contour_folder).glob("*-auto.txt")):
        m = pattern.search(path.name)
        if m and int(m.group(1)) in by_number:
            contours.setdefault(int(m.group(1)), {})[m.group(2)] = read_polygon(path)
    X, Y, Z, T = study.sax.shape
    labels = np.zeros((X, Y, Z, T), np.uint8)
    annotated = []
    for number, kinds in sorted(contours.items()):
        if "icontour" not in kinds:
            continue
        z, t = by_number[number]
        classes = [LABELS["lv_cavity"]]
        if "ocontour" in kinds:
            labels[:, :, z, t][polygon_mask(kinds["ocontour"], (X, Y))] = LABELS["lv_myocardium"]
            classes.append(LABELS["lv_myocardium"])
        labels[:, :, z, t][polygon_mask(kinds["icontour"], (X, Y))] = LABELS["lv_cavity"]
        annotated.append({"slice": z, "frame": t, "classes": classes})
    study.sax_labels = Volume(labels, study.sax.affine, {"source": str(contour_folder)})
    study.meta["annotated"] = annotated
    study.meta["contours"] = "automatic"
    return study


@dataclass(frozen=True)
class SynthTrainConfig:
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_steps: int = 20000
    real_fraction: float = 0.25  # share of each batch from contoured real slices
    seed: int = 0
    checkpoint_every: int = 100
    warmup_steps: int = 200
    full_real_fraction: float = 0.0  # share of each batch from fully labelled real slices (ACDC)
    full_real_zoom: tuple[float, float] = (0.75, 1.4)  # their pixel size is unknown (ACDC: 1.37-1.68 mm)
    init_weights: str | None = None  # start from these weights (same architecture), e.g. segnet_synth


def synth_lr(tc: SynthTrainConfig, step: int) -> float:
    """Learning rate at `step`: linear warm-up, then cosine to zero at `max_steps`. A function of the
    step alone, so a run may be resumed with another `max_steps` (the schedule follows from there)."""
    if step < tc.warmup_steps:
        return tc.lr * (0.05 + 0.95 * step / tc.warmup_steps)
    frac = min(1.0, (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))
    return tc.lr * 0.5 * (1 + math.cos(math.pi * frac))


def load_real_studies(paths: list[str | Path]) -> list[tuple[str, Study]]:
    """Contoured real studies: Sunnybrook DICOM folders (manual contours via link.csv) and the
    ep_preclinical SAX folder (automatic contours in the `lvContours` folder beside it)."""
    out = []
    for p in map(Path, paths):
        study = read_study(p)
        if "annotated" not in study.meta and (p.parent / "lvContours").is_dir():
            study = read_ep_contours(study, p.parent / "lvContours")
        if not study.meta.get("annotated"):
            raise ValueError(f"{p}: no contoured slices")
        out.append((p.name, study))
    return out


def train_synth_segnet(config: SegConfig, tissue_dir: str | Path, real: list[str | Path], out: str | Path,
                       tc: SynthTrainConfig = SynthTrainConfig(), real_weights: list[float] | None = None,
                       progress: bool = True, full_real=None, full_real_source: str = "") -> Path:
    """Train (or resume) a whole-field window segmenter on synthetic-appearance images made from the
    phantom tissue stacks in `tissue_dir` (`synth.write_tissue_bank`) plus the contoured slices of
    `real` (partial labels marginalised) and, with `full_real` (`synth.RealSlices`, e.g.
    `training.acdc.acdc_real_slices`), fully labelled real slices for `tc.full_real_fraction` of each
    batch. Checkpoint every `checkpoint_every` steps; the weights at OUT/weights/model.* are
    rewritten at each checkpoint, so a run stopped early still ships."""
    from cardiorecon.training.synth import RealAugmenter, SynthConfig, Synthesizer, load_tissue_bank, real_slices

    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    scfg = SynthConfig(spacing_mm=config.pixel_spacing_mm, patch_size=config.image_size)
    settings = {"model": config_to_json(config), "train": config_to_json(tc), "synth": config_to_json(scfg),
                "tissue": str(tissue_dir), "real": [str(r) for r in real], "real_weights": real_weights,
                "full_real": full_real_source,
                "full_real_subjects": sorted(set(full_real.source)) if full_real is not None else []}
    (run / "run.json").write_text(json.dumps(json.loads(json.dumps(settings)), indent=2))
    stacks = load_tissue_bank(tissue_dir)
    synth = Synthesizer(stacks, scfg)
    studies = load_real_studies(real) if real else []
    if real_weights is None:  # automatic contours count half as much as a person's
        real_weights = [0.5 if s.meta.get("contours") == "automatic" else 1.0 for _, s in studies]
    bank = real_slices(studies, config.pixel_spacing_mm, config.num_classes, real_weights) if real else None
    augment = RealAugmenter(bank, synth) if bank is not None else None
    augment_full = RealAugmenter(full_real, synth, tc.full_real_zoom) if full_real is not None else None
    print(f"training on {len(stacks)} phantom tissue stacks, {0 if bank is None else len(bank.images)} "
          f"contoured real slices and {0 if full_real is None else len(full_real.images)} fully labelled real "
          f"slices", flush=True)
    torch.manual_seed(tc.seed)
    net = SegNet(config)
    if tc.init_weights:
        from cardiorecon.segment import load_segnet

        net.load_state_dict(load_segnet(tc.init_weights).state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ckpt, start = run / "checkpoints" / "last", 0
    if ckpt.with_suffix(".safetensors").is_file():
        state = load_state(ckpt)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        print(f"resumed at step {start}", flush=True)
    log_path = run / "log.csv"
    new_log = not log_path.is_file()
    n_real = int(round(tc.batch_size * tc.real_fraction)) if augment is not None else 0
    n_full = int(round(tc.batch_size * tc.full_real_fraction)) if augment_full is not None else 0
    full_known = torch.ones(config.num_classes, dtype=torch.bool)
    with open(log_path, "a", newline="") as fh:
        log = csv.writer(fh)
        if new_log:
            log.writerow(["step", "loss", "loss_synth", "loss_real", "steps_per_s", "time"])
        t0, done = time.perf_counter(), 0
        net.train()
        for step in range(start, tc.max_steps):
            g = step_generator(tc.seed, step)
            xs, ys = synth.batch(tc.batch_size - n_real - n_full, g)
            ks = full_known.expand(len(xs), -1)
            if n_full or n_real:
                reals = [augment_full.sample(g) for _ in range(n_full)] + [augment.sample(g) for _ in range(n_real)]
                xs = torch.cat([xs, torch.stack([r[0] for r in reals])])
                ys = torch.cat([ys, torch.stack([r[1] for r in reals])])
                ks = torch.cat([ks, torch.stack([r[2] for r in reals])])
            x, y, known = xs.as_subclass(torch.Tensor), ys.as_subclass(torch.Tensor), ks
            for group in opt.param_groups:
                group["lr"] = synth_lr(tc, step)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(x)
            full = known[:, 1:].all(1)  # synthetic and fully labelled real slices
            loss_ce = partial_label_loss(logits, y, known)
            loss = loss_ce + soft_dice_loss(logits, y, full)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            done += 1
            s = step + 1
            if s % 25 == 0:
                with torch.no_grad():
                    ls = partial_label_loss(logits[full], y[full], known[full]).item() if full.any() else float("nan")
                    lr_ = partial_label_loss(logits[~full], y[~full], known[~full]).item() if (~full).any() \
                        else float("nan")
                rate = done / (time.perf_counter() - t0)
                log.writerow([s, round(loss.item(), 5), round(ls, 5), round(lr_, 5), round(rate, 3),
                              time.strftime("%Y-%m-%dT%H:%M:%S")])
                fh.flush()
                if progress:
                    print(f"step {s} loss {loss.item():.4f} synth-CE {ls:.4f} real-CE {lr_:.4f} {rate:.2f} it/s",
                          flush=True)
            if s % tc.checkpoint_every == 0 or s == tc.max_steps:
                save_state({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": s}, ckpt)
                save_weights(net, config, run / "weights" / "model",
                             extra={"steps": s, "tissue": str(tissue_dir), "real": settings["real"],
                                    "full_real": settings["full_real"],
                                    "full_real_subjects": settings["full_real_subjects"]})
    net.eval()
    return run
