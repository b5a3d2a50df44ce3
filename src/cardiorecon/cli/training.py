"""Commands that train networks: train, train-seg."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cardiorecon.cli.app import DEVICE_HELP, app, fail, torch_device


@app.command()
def train(config: str = typer.Option("tiny", "--config",
                                     help="tiny, base, dmcvr_tiny, dmcvr_labels_tiny, or a YAML file of DiffAEConfig fields"),
          data: list[Path] = typer.Option(..., "--data", help="Subject folders, or folders of them (repeatable)"),
          out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds a checkpoint)"),
          init_from: Optional[Path] = typer.Option(None, "--init-from", help="Run folder or weights to start from"),
          holdout: Optional[list[Path]] = typer.Option(None, "--holdout", help="Subjects for the figures"),
          max_steps: int = typer.Option(20000, "--max-steps", min=1),
          batch_size: int = typer.Option(16, "--batch-size", min=1),
          lr: float = typer.Option(1e-4, "--lr"),
          precision: str = typer.Option("bf16-mixed", "--precision", help="bf16-mixed, 16-mixed or 32-true"),
          strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ..."),
          devices: str = typer.Option("1", "--devices", help="Devices per node (or 'auto')"),
          num_nodes: int = typer.Option(1, "--num-nodes", min=1),
          checkpoint_every: int = typer.Option(250, "--checkpoint-every", min=1),
          figure_every: int = typer.Option(1000, "--figure-every", min=1),
          seed: int = typer.Option(0, "--seed"),
          seg_weights: Optional[Path] = typer.Option(
              None, "--seg-weights", help="Segmentation network for a DMCVR config's morphology (default: shipped)"),
          exclude_frame: Optional[list[str]] = typer.Option(
              None, "--exclude-frame", help="SUBJECT:FRAME left out of training (held out), repeatable"),
          device: str = typer.Option("auto", "--device", help=DEVICE_HELP)) -> None:
    """Train the diffusion autoencoder, or DMCVR's morphology-conditioned one (resumable; --init-from to fine-tune)."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.training.diffae import TrainConfig, resolve_config
    from cardiorecon.training.diffae import train as train_diffae

    try:
        cfg = resolve_config(config)
        tc = TrainConfig(batch_size=batch_size, lr=lr, max_steps=max_steps, precision=precision,  # type: ignore[arg-type]
                         strategy=strategy, devices=int(devices) if devices.isdigit() else devices,
                         num_nodes=num_nodes, checkpoint_every=checkpoint_every, figure_every=figure_every, seed=seed,
                         accelerator="gpu" if torch_device(device).type == "cuda" else "cpu")
        excluded: dict[str, list[int]] = {}
        for item in exclude_frame or []:
            name, _, frame = item.rpartition(":")
            if not name or not frame.isdigit():
                raise typer.BadParameter(f"--exclude-frame expects SUBJECT:FRAME, got {item!r}")
            excluded.setdefault(name, []).append(int(frame))
        run = train_diffae(cfg, list(data), out, tc, init_from=init_from, holdout=list(holdout) if holdout else None,
                           exclude_frames=excluded, seg_weights=seg_weights)
    except CardioReconError as exc:
        fail(exc)
    typer.echo(f"run folder: {run} (EMA weights in {run / 'weights'})")


@app.command("train-seg")
def train_seg(data: list[Path] = typer.Option(..., "--data", help="Labelled subject folders, or folders of them"),
              out: Path = typer.Option(..., "--out", help="Run folder (resumes if it holds a checkpoint)"),
              holdout: Optional[list[Path]] = typer.Option(None, "--holdout", help="Labelled subjects to score"),
              exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Subject folder name to leave out"),
              max_steps: int = typer.Option(3000, "--max-steps", min=1),
              batch_size: int = typer.Option(32, "--batch-size", min=1),
              lr: float = typer.Option(1e-3, "--lr"),
              seed: int = typer.Option(0, "--seed"),
              tissue: Optional[Path] = typer.Option(
                  None, "--tissue", help="Phantom tissue stacks (benchmarks/train_seg_synth.py renders them): train the "
                                         "whole-field seg_synth network on synthetic appearance; --data then lists "
                                         "the contoured real scans (Sunnybrook, ep_preclinical)")) -> None:
    """Train the SAX segmentation network (resumable); scores Dice on --holdout."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.models.segnet import NAMED_SEG_CONFIGS, SegConfig
    from cardiorecon.segment import load_segnet
    from cardiorecon.training.segment import SegTrainConfig, build_seg_bank, evaluate_bank, train_segnet, write_scores

    if tissue is not None:
        from cardiorecon.training.segment import SynthTrainConfig, train_synth_segnet

        try:
            run = train_synth_segnet(NAMED_SEG_CONFIGS["seg_synth"], tissue, list(data), out,
                                     SynthTrainConfig(max_steps=max_steps, seed=seed))  # its own lr and batch
        except CardioReconError as exc:
            fail(exc)
        typer.echo(f"run folder: {run} (weights in {run / 'weights'})")
        return
    try:
        cfg = SegConfig()
        run = train_segnet(cfg, list(data), out, SegTrainConfig(batch_size=batch_size, lr=lr, max_steps=max_steps,
                                                                 seed=seed), exclude=exclude or [])
        if holdout:
            scores = {str(h): evaluate_bank(load_segnet(run), build_seg_bank([h], cfg, progress=False))
                      for h in holdout}
            write_scores(run / "holdout_dice.json", scores)
            for h, s in scores.items():
                typer.echo(f"{h}: " + ", ".join(f"{k} Dice {v:.3f}" for k, v in s.items()))
    except CardioReconError as exc:
        fail(exc)
    typer.echo(f"run folder: {run} (weights in {run / 'weights'})")
