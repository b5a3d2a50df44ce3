"""Training the diffusion autoencoder under Lightning, readable top to bottom.

Every random choice of step s (which slices, augmentation, t, eps) comes from a generator seeded
by (seed, s, rank), so a run resumed from its last checkpoint continues exactly as an
uninterrupted one would: the state is the weights, the EMA, the optimizer and the step.
"""

from __future__ import annotations

import copy
import logging
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.diffusion import NoiseSchedule, ddim_invert, ddim_sample
from cardiorecon.errors import InputError
from cardiorecon.io.nifti import atomic_write
from cardiorecon.models.config import (NAMED_CONFIGS, DiffAEConfig, config_from_json, config_to_json, load_weights,
                                       read_config, save_weights)
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.dmcvr import MorphologyEncoder, check_pair, init_from_diffae
from cardiorecon.training.checkpoint import SafetensorsCheckpointIO
from cardiorecon.training.data import augment, build_bank


@dataclass(frozen=True)
class TrainConfig:
    """How to train (saved in the run folder and in every checkpoint)."""

    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_steps: int = 20000
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    precision: Literal["bf16-mixed", "32-true", "16-mixed"] = "bf16-mixed"
    seed: int = 0
    checkpoint_every: int = 250
    figure_every: int = 1000
    figure_invert_steps: int = 50
    figure_decode_steps: int = 20
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several GPUs or nodes
    max_rotation_deg: float = 10.0
    max_shift_px: float = 3.0  # in-plane shifts; no flips (a mirror puts the RV on the wrong side)
    scale_range: tuple[float, float] = (1.0, 1.0)  # isotropic zoom: pixel sizes the data does not pin down
    bias_field: float = 0.0  # max log amplitude of a smooth multiplicative field (0: off)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


class DiffAEModule(L.LightningModule):
    """The DiffAE (or, with `morphology`, DMCVR's morphology-conditioned decoder) being trained."""

    def __init__(self, config: DiffAEConfig, train: TrainConfig, bank: np.ndarray | None = None,
                 morphology: MorphologyEncoder | None = None):
        super().__init__()
        self.config, self.train_config = config, train
        self.model = DiffAE(config)
        self.morphology = morphology  # frozen, not optimised
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.schedule = NoiseSchedule.linear(config.num_timesteps)
        self.bank = None if bank is None else torch.from_numpy(bank)
        self._t0 = time.perf_counter()

    def batch(self, step: int) -> torch.Tensor:
        """The augmented clean slices of training step `step` (B, 1, H, W)."""
        g = step_generator(self.train_config.seed, step, self.global_rank)
        idx = torch.randint(len(self.bank), (self.train_config.batch_size,), generator=g)
        x0 = self.bank[idx].float().unsqueeze(1)
        tc = self.train_config
        return augment(x0, g, tc.max_rotation_deg, tc.max_shift_px, scale_range=tuple(tc.scale_range),
                       bias_field=tc.bias_field), g

    def training_step(self, _batch, _batch_idx):
        x0, g = self.batch(self.global_step)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x0, t, eps = x0.to(self.device), t.to(self.device), eps.to(self.device)
        x_t = self.schedule.add_noise(x0, eps, t)
        morph = None if self.morphology is None else self.morphology(x0)
        loss = F.mse_loss(self.model(x_t, t, x0, morph).float(), eps)
        self.log("loss", loss, prog_bar=True, on_step=True)
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self._update_ema()  # here, not in a batch-end hook: checkpoint callbacks run before those

    @torch.no_grad()
    def _update_ema(self):
        # EMA with the usual warm-up so that short runs are not dominated by the initial weights.
        step = self.global_step
        decay = min(self.train_config.ema_decay, (1 + step) / (10 + step))
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(b)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.train_config.lr,
                                 weight_decay=self.train_config.weight_decay)

    def train_dataloader(self):
        return _StepLoader(range(self.train_config.max_steps), batch_size=1)


class _StepLoader(torch.utils.data.DataLoader):
    """Only counts steps: the data come from `batch(global_step)`, so resuming needs no loader
    state (the empty state_dict tells Lightning that this loader is resumable)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@torch.no_grad()
def autoencode(model: DiffAE, schedule: NoiseSchedule, x0: torch.Tensor, invert_steps: int,
               decode_steps: int, morph: torch.Tensor | None = None) -> tuple[torch.Tensor, object, torch.Tensor]:
    """encode (z_sem, then x_T by DDIM inversion) and decode: returns (reconstruction, cond, x_T);
    cond is z_sem, or (z_sem, morph) for a morphology-conditioned decoder."""
    z = model.encode(x0)
    cond = z if morph is None else (z, morph)
    x_T = ddim_invert(model.eps, x0, schedule, invert_steps, cond=cond)
    return ddim_sample(model.eps, x_T, schedule, decode_steps, cond=cond), cond, x_T


class RunLogger(L.Callback):
    """Checkpoints, EMA weights, a CSV log and figures in the run folder."""

    def __init__(self, run: Path, holdout: torch.Tensor):
        self.run, self.holdout = run, holdout
        self._last = (time.perf_counter(), 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step, tc = trainer.global_step, module.train_config
        if step % tc.checkpoint_every == 0 or step == tc.max_steps:
            # Every rank calls this: it holds a barrier (under DDP only rank 0 writes). Called from
            # rank 0 alone, the other ranks never reach the barrier and the run hangs.
            trainer.save_checkpoint(self.run / "checkpoints" / "last")
        if trainer.global_rank != 0:
            return
        if step % 25 == 0 or step == tc.max_steps:
            now = time.perf_counter()
            rate = (step - self._last[1]) / max(now - self._last[0], 1e-9)
            self._last = (now, step)
            log = self.run / "log.csv"
            new = not log.exists()
            with open(log, "a", newline="") as fh:
                w = csv.writer(fh)
                if new:
                    w.writerow(["step", "loss", "steps_per_s", "time"])
                w.writerow([step, float(outputs["loss"]), round(rate, 3), time.strftime("%Y-%m-%dT%H:%M:%S")])
        if step % tc.checkpoint_every == 0 or step == tc.max_steps:
            save_weights(module.ema, module.config, self.run / "weights" / "ema",
                         extra={"step": step, "train": config_to_json(tc)})
        if step % tc.figure_every == 0 or step == tc.max_steps:
            morph = None if module.morphology is None else module.morphology(self.holdout.to(module.device))
            autoencode_figure(module.ema, module.schedule, self.holdout, self.run / "figures" / f"step_{step:07d}.png",
                              tc.figure_invert_steps, tc.figure_decode_steps, morph)


def autoencode_figure(model: DiffAE, schedule: NoiseSchedule, x0: torch.Tensor, out: Path,
                      invert_steps: int = 50, decode_steps: int = 20, morph: torch.Tensor | None = None) -> Path:
    """Rows: input, autoencoded (invert, decode), decoded from random x_T with the input's z_sem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    was_training = model.training
    model.eval()
    rec, z, _ = autoencode(model, schedule, x0, invert_steps, decode_steps, morph)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        samples = ddim_sample(model.eps, torch.randn(x0.shape, generator=g), schedule, decode_steps, cond=z)
    model.train(was_training)
    same = "same z_sem" if morph is None else "same z_sem + morphology"
    rows = [("input", x0), (f"autoencoded ({invert_steps}/{decode_steps})", rec), (f"random x_T, {same}", samples)]
    n = x0.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2))
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(imgs[c, 0].T.cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_axis_off()
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def resolve_config(name_or_file: str) -> DiffAEConfig:
    """'tiny', 'base', or a JSON/YAML file of DiffAEConfig fields."""
    if name_or_file in NAMED_CONFIGS:
        return NAMED_CONFIGS[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise InputError(path, f"not a named config ({', '.join(NAMED_CONFIGS)}) nor a config file")
    import yaml

    data = yaml.safe_load(path.read_text())
    base = NAMED_CONFIGS[data.pop("base", "tiny")]
    return config_from_json(DiffAEConfig, {**config_to_json(base), **data})


def train(config: DiffAEConfig, data: list[str | Path], out: str | Path, train_config: TrainConfig = TrainConfig(),
          init_from: str | Path | None = None, holdout: list[str | Path] | None = None,
          exclude_frames: dict[str, list[int]] | None = None, seg_weights: str | Path | None = None) -> Path:
    """Train (or resume, when `out` holds a checkpoint) a DiffAE; returns the run folder.

    `init_from` (a run folder or weights path) starts from those EMA weights: fine-tuning. A
    config with a morphology input (DMCVR) trains with the frozen segmentation network of
    `seg_weights` (default: the shipped one, copied into RUN/weights/segnet) and may start from a
    plain DiffAE's weights (the new input channels start at zero).
    """
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    morphology = None
    if config.morph_channels:
        from cardiorecon.segment import load_segnet

        kept = run / "weights" / "segnet"
        if kept.with_suffix(".safetensors").is_file():  # a resumed run keeps its own segmentation network
            if seg_weights is not None:
                print(f"resuming: using the run's own {kept}.safetensors, not {seg_weights}", flush=True)
            segnet = load_segnet(kept)
        else:
            segnet = load_segnet(seg_weights)
            save_weights(segnet, segnet.config, kept)
        check_pair(config, segnet.config)
        morphology = MorphologyEncoder(segnet, config.morph_level, config.morph_source, config.pixel_spacing_mm)
    settings = {"model": config_to_json(config), "train": config_to_json(train_config),
                "data": [str(d) for d in data], "init_from": None if init_from is None else str(init_from),
                "exclude_frames": exclude_frames or {}}
    settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
    settings_path = run / "run.json"
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if saved["model"] != settings["model"]:
            raise InputError(settings_path, "this run folder holds a run with another model config")
    text = json.dumps(settings, indent=2)  # every DDP rank writes the same text: atomically
    atomic_write(settings_path, lambda tmp: tmp.write_text(text), suffix=".json")
    print(f"building the slice data from {len(data)} path(s) ...", flush=True)
    bank = build_bank(list(data), config.pixel_spacing_mm, config.image_size, cache=run / "data" / "train.npy",
                      exclude_frames=exclude_frames)
    held = build_bank(list(holdout), config.pixel_spacing_mm, config.image_size, cache=run / "data" / "holdout.npy") \
        if holdout else bank
    pick = np.linspace(0, len(held) - 1, 8).astype(int)
    holdout_x = torch.from_numpy(held[pick].astype(np.float32)).unsqueeze(1)
    print(f"training on {len(bank)} slices of {config.image_size}x{config.image_size} at {config.pixel_spacing_mm} mm",
          flush=True)
    torch.manual_seed(train_config.seed)  # the initial weights depend on the seed alone
    module = DiffAEModule(config, train_config, bank, morphology)
    ckpt = run / "checkpoints" / "last.safetensors"
    if not ckpt.is_file() and init_from is not None:
        src = Path(init_from)
        weights = src / "weights" / "ema" if src.is_dir() else src.with_suffix("")
        src_config = read_config(weights, DiffAEConfig)
        if config.morph_channels and not src_config.morph_channels:
            padded = init_from_diffae(module.model, load_weights(DiffAE(src_config), src_config, weights))
            print(f"initialised from the plain DiffAE {weights}.safetensors (morphology inputs zero in {padded})",
                  flush=True)
        else:
            load_weights(module.model, config, weights)
            print(f"initialised from {weights}.safetensors", flush=True)
        module.ema.load_state_dict(module.model.state_dict())
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    trainer = L.Trainer(
        max_steps=train_config.max_steps, accelerator=train_config.accelerator, devices=train_config.devices,
        num_nodes=train_config.num_nodes, strategy=train_config.strategy, precision=train_config.precision,
        gradient_clip_val=train_config.grad_clip, logger=False, enable_checkpointing=False,
        plugins=[SafetensorsCheckpointIO()], callbacks=[RunLogger(run, holdout_x)], max_epochs=-1,
        log_every_n_steps=25, enable_model_summary=False,
    )
    if ckpt.is_file():
        print(f"resuming from {ckpt}", flush=True)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt.is_file() else None)
    return run
