"""Pre-training `selfsr`'s network on many subjects' own in-plane pairs (issue 26).

`selfsr` normally trains a fresh network on one subject's images. Here the same kind of pairs
(`recon.selfsr.inplane_pairs`: the working-grid SAX images degraded along x and along y as the stack
samples its normal) are gathered from many subjects, each at its own slice thickness and at the slice
step it will be reconstructed from (`drop` times its acquired step: 2 for the slice-drop protocol, 1
for a study reconstructed as acquired) with the output factor `factor`; one network is trained on
all of them and saved (safetensors + JSON, `SRNetConfig`, plus what it saw). `reconstruct --method
selfsr --option init=WEIGHTS` then fine-tunes it on the subject (`--option steps=0`: used as is).

The subjects' working grids are made from their images alone (`autoencoder.prepare_study`: the heart
region found from the images), never from labels.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from cardiorecon.autoencoder import prepare_study
from cardiorecon.models.config import save_weights
from cardiorecon.recon.selfsr import Pairs, Sampling, SelfSRConfig, SRNetConfig, inplane_pairs, study_sampling, train
from cardiorecon.volume import Study


def study_pairs(study: Study, frames: list[int], factor: int, drop: int, config: SelfSRConfig,
                grid_spacing_mm: float = 2.0, grid_size: int = 64) -> tuple[Pairs, Sampling]:
    """In-plane pairs of `frames` of one study on its working grid, degraded for a stack of `drop`
    times its slice step reconstructed at `factor`."""
    grid = prepare_study(study, grid_spacing_mm, grid_size)
    sampling = study_sampling(study, grid, factor, drop)
    pairs = Pairs()
    for t in frames:
        pairs.extend(inplane_pairs(grid.image.data[..., t], sampling, config))
    return pairs, sampling


def pretrain(studies: dict[str, tuple[Study, list[int]]], out: str | Path, factor: int, drop: int,
             config: SelfSRConfig, steps: int, log=print) -> Path:
    """Gather the pairs of every study ({name: (study, frames)}), train one network `steps` steps
    (the other settings from `config`), and write OUT.safetensors + OUT.json (config, and in the JSON
    the subjects, frames, samplings, steps and seconds). Returns the .safetensors path."""
    t0 = time.perf_counter()
    pairs, samplings = Pairs(), {}
    for i, (name, (study, frames)) in enumerate(studies.items()):
        p, s = study_pairs(study, frames, factor, drop, config)
        pairs.extend(p)
        samplings[name] = dataclasses.asdict(s)
        log(f"  [{i + 1}/{len(studies)}] {name}: {len(p)} planes (step {s.step_px:.1f} px, slab {s.thickness_px:.1f} "
            f"px, factor {s.factor}), {time.perf_counter() - t0:.0f} s")
    pair_seconds = time.perf_counter() - t0
    history: list[float] = []
    net = train(pairs, dataclasses.replace(config, steps=steps, init=""), progress=True, desc="selfsr pre-training",
                history=history)
    extra = {"pretraining": {"subjects": {n: fr for n, (_, fr) in studies.items()}, "samplings": samplings,
                             "factor": factor, "drop": drop, "planes": len(pairs), "steps": steps,
                             "batch_size": config.batch_size, "lr": config.lr, "seed": config.seed,
                             "seconds_pairs": round(pair_seconds, 1),
                             "seconds_training": round(time.perf_counter() - t0 - pair_seconds, 1),
                             "loss_first_100": float(np.mean(history[:100])), "loss_last_100": float(np.mean(history[-100:]))}}
    return save_weights(net, SRNetConfig.of(config), out, extra)


__all__ = ["pretrain", "study_pairs"]
