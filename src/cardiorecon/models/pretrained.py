"""Finding and loading trained weights: the shipped ones, a run folder, or a weights file."""

from __future__ import annotations

from pathlib import Path

from cardiorecon.errors import ConfigMismatchError, InputError
from cardiorecon.models.config import DiffAEConfig, load_weights, read_config
from cardiorecon.models.diffae import DiffAE
from cardiorecon.models.latent import LatentConfig, LatentMLP

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_DIFFAE = WEIGHTS_DIR / "diffae_tiny"
DEFAULT_DMCVR = WEIGHTS_DIR / "dmcvr_labels_tiny"


def resolve_weights(path: str | Path | None, name: str = "model", default: Path = DEFAULT_DIFFAE) -> Path:
    """The weights stem (without suffix) for: None (the shipped weights `default`), a folder holding
    NAME.safetensors, a run folder (its weights/ema), or a path to NAME(.safetensors|.json)."""
    p = default if path is None else Path(path)
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
    if config.morph_channels:
        raise ConfigMismatchError(f"{stem}.json: these are DMCVR weights (config {config.name!r}, a decoder with "
                                  f"the morphology input); use them with method dmcvr (load_dmcvr)")
    if expected is not None and config != expected:
        raise ConfigMismatchError(f"{stem}.json: weights are for config {config.name!r} ({config}), "
                                  f"not the requested {expected.name!r}")
    model = load_weights(DiffAE(config), config, stem)
    model.eval()
    return model


def load_dmcvr(path: str | Path | None = None, expected: DiffAEConfig | None = None):
    """DMCVR: the morphology-conditioned DiffAE (NAME 'model' or a run's weights/ema) and the frozen
    segmentation network beside it (`segnet`.safetensors in the same folder). Refuses plain DiffAE
    weights and a segmentation network whose features do not fit the decoder's morphology input."""
    from cardiorecon.models.dmcvr import DMCVR
    from cardiorecon.models.segnet import SegConfig

    stem = resolve_weights(path, default=DEFAULT_DMCVR)
    config = read_config(stem, DiffAEConfig)
    if not config.morph_channels:
        raise ConfigMismatchError(f"{stem}.json: config {config.name!r} has no morphology input: these are plain "
                                  f"DiffAE weights, not DMCVR weights")
    if expected is not None and config != expected:
        raise ConfigMismatchError(f"{stem}.json: weights are for config {config.name!r}, not {expected.name!r}")
    seg_stem = stem.parent / "segnet"
    seg_config = read_config(seg_stem, SegConfig)
    model = DMCVR(config, seg_config)  # refuses a pair that does not fit
    load_weights(model.diffae, config, stem)
    load_weights(model.morphology.segnet, seg_config, seg_stem)
    return model.eval()


def load_latent(path: str | Path | None = None) -> LatentMLP:
    """The latent DDIM shipped beside a DiffAE (NAME 'latent')."""
    stem = resolve_weights(path, name="latent")
    config = read_config(stem, LatentConfig)
    net = load_weights(LatentMLP(config), config, stem)
    net.eval()
    return net


#: The loader of each kind of network a reconstruction method can need (`ReconMethod.weights`).
LOADERS = {"diffae": load_diffae, "dmcvr": load_dmcvr}


def load_network(kind: str, path: str | Path | None = None):
    """The network of `kind` ('diffae' or 'dmcvr') from `path` (None: the shipped one)."""
    return LOADERS[kind](path)
