"""Finding and loading trained weights: the shipped ones, a run folder, or a weights file."""

from __future__ import annotations

from pathlib import Path

from cardiorecon.errors import ConfigMismatchError, InputError
from cardiorecon.models.config import DiffAEConfig, load_weights, read_config
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.latent import LatentConfig, LatentMLP

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_DIFFAE = WEIGHTS_DIR / "diffae_tiny"


def resolve_weights(path: str | Path | None, name: str = "model") -> Path:
    """The weights stem (without suffix) for: None (the shipped DiffAE), a folder holding
    NAME.safetensors, a run folder (its weights/ema), or a path to NAME(.safetensors|.json)."""
    p = DEFAULT_DIFFAE if path is None else Path(path)
    candidates = [p / name, p / "weights" / "ema", p.with_suffix("")] if p.is_dir() else [p.with_suffix("")]
    for stem in candidates:
        if stem.with_suffix(".safetensors").is_file():
            return stem
    if path is None:
        raise InputError(p, "the shipped weights are missing from this installation")
    raise InputError(p, f"no {name}.safetensors (or weights/ema.safetensors) found")


def load_diffae(path: str | Path | None = None, expected: DiffAEConfig | None = None) -> DiffAE:
    """Build the DiffAE of the weights' config and load them (EMA weights for inference).

    With `expected`, refuses weights trained with any other config.
    """
    stem = resolve_weights(path)
    config = read_config(stem, DiffAEConfig)
    if expected is not None and config != expected:
        raise ConfigMismatchError(f"{stem}.json: weights are for config {config.name!r} ({config}), "
                                  f"not the requested {expected.name!r}")
    model = load_weights(DiffAE(config), config, stem)
    model.eval()
    return model


def load_latent(path: str | Path | None = None) -> LatentMLP:
    """The latent DDIM shipped beside a DiffAE (NAME 'latent')."""
    stem = resolve_weights(path, name="latent")
    config = read_config(stem, LatentConfig)
    net = load_weights(LatentMLP(config), config, stem)
    net.eval()
    return net
