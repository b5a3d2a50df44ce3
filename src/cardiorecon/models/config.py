"""Model configurations (small frozen dataclasses) and weights on disk: safetensors with the
config as JSON beside them; loading refuses weights whose config does not match."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from cardiorecon.errors import ConfigMismatchError, InputError
from cardiorecon.io.nifti import atomic_write

C = TypeVar("C")


@dataclass(frozen=True)
class DiffAEConfig:
    """The diffusion autoencoder: decoder UNet + semantic encoder, and the data geometry."""

    name: str = "tiny"
    image_size: int = 64
    pixel_spacing_mm: float = 2.0
    in_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2, 3)
    encoder_channels: int = 32
    encoder_res_blocks: int = 1
    z_dim: int = 256
    dropout: float = 0.0
    num_timesteps: int = 1000
    morph_channels: int = 0  # > 0: DMCVR's morphology input to the decoder
    morph_level: int = 2
    # where the morphology comes from (models/dmcvr.py): "features", the frozen segmentation network's
    # encoder features per structure at morph_level; "labels", its predicted label map (class
    # probabilities at full resolution) through a small conv encoder trained with the decoder
    morph_source: str = "features"
    # how the first block at morph_level normalises its widened input: "joint", one group norm over the
    # old and the morphology channels together (the shipped DMCVR weights); "split", the old channels
    # in their own groups as in the plain DiffAE, so that a DiffAE-initialised DMCVR starts exactly as it
    morph_norm: str = "joint"


NAMED_CONFIGS: dict[str, DiffAEConfig] = {
    # 64 x 64 at 2 mm (128 mm field), about 5 M + 0.8 M parameters: trainable on 2 CPU cores.
    "tiny": DiffAEConfig(),
    # 128 x 128 at 1.5 mm (192 mm field), the seed's scale (about 100 M parameters): for a GPU.
    "base": DiffAEConfig(name="base", image_size=128, pixel_spacing_mm=1.5, base_channels=128,
                         channel_mult=(1, 1, 2, 3, 4), num_res_blocks=2, attention_levels=(3,),
                         encoder_channels=64, encoder_res_blocks=2, z_dim=512, dropout=0.1),
}
# DMCVR: the same decoders with the morphology input (3 structures x 32 channels of the seg_tiny
# encoder at 1/4 resolution; see models/dmcvr.py).
NAMED_CONFIGS["dmcvr_tiny"] = dataclasses.replace(NAMED_CONFIGS["tiny"], name="dmcvr_tiny", morph_channels=96,
                                                  morph_level=2)
# The other morphology encoder: the predicted label map of LV cavity, myocardium and RV cavity (3 channels,
# 64 x 64) through a small conv encoder trained with the decoder. The shipped DMCVR: it beat dmcvr_tiny in an
# equal-budget comparison on the phantom (weights/dmcvr_labels_tiny/MODEL_CARD.md).
NAMED_CONFIGS["dmcvr_labels_tiny"] = dataclasses.replace(NAMED_CONFIGS["dmcvr_tiny"], name="dmcvr_labels_tiny",
                                                         morph_channels=3, morph_source="labels")


def config_to_json(config: Any) -> dict[str, Any]:
    return {"type": type(config).__name__, **dataclasses.asdict(config)}


def config_from_json(cls: type[C], data: dict[str, Any]) -> C:
    data = dict(data)
    kind = data.pop("type", cls.__name__)
    if kind != cls.__name__:
        raise ConfigMismatchError(f"config is a {kind}, expected a {cls.__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigMismatchError(f"unknown {cls.__name__} fields {unknown}")
    for k, v in data.items():
        if isinstance(v, list):
            data[k] = tuple(v)
    return cls(**data)


def save_weights(module: nn.Module, config: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `path`.safetensors (the state dict, config in its metadata) and `path`.json."""
    from safetensors.torch import save_file

    path = Path(path)
    cfg = config_to_json(config)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"config": json.dumps(cfg, sort_keys=True)}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                 suffix=".safetensors")
    sidecar = {"config": cfg, "num_parameters": int(sum(v.numel() for v in tensors.values())), **(extra or {})}
    text = json.dumps(sidecar, indent=2, sort_keys=True)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text), suffix=".json")
    return path.with_suffix(".safetensors")


def read_config(path: str | Path, cls: type[C]) -> C:
    """The config of saved weights (from the JSON beside them)."""
    path = Path(path).with_suffix(".json")
    if not path.is_file():
        raise InputError(path, "weights config (JSON beside the .safetensors) not found")
    try:
        return config_from_json(cls, json.loads(path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a weights config ({exc})") from exc
    except ConfigMismatchError as exc:  # another model kind's weights (a segmentation network's, ...): name the file
        raise ConfigMismatchError(f"{path}: {exc}; these weights are for another kind of model") from exc


def load_weights(module: nn.Module, config: Any, path: str | Path) -> nn.Module:
    """Load `path`.safetensors into `module` built from `config`.

    Refuses (ConfigMismatchError) when the JSON config, the config stored inside the safetensors
    file, or the tensor names and shapes do not match `config`. Never unpickles anything.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    st = path.with_suffix(".safetensors")
    if not st.is_file():
        raise InputError(st, "weights file not found")
    expected = json.loads(json.dumps(config_to_json(config)))  # tuples -> lists, as stored
    sidecar = read_config(path, type(config))
    saved = json.loads(json.dumps(config_to_json(sidecar)))
    if saved != expected:
        diff = {k: (v, expected.get(k)) for k, v in saved.items() if expected.get(k) != v}
        raise ConfigMismatchError(f"{path.with_suffix('.json')}: config does not match (saved, expected): {diff}")
    try:
        with safe_open(str(st), framework="pt") as fh:
            inner = (fh.metadata() or {}).get("config")
    except Exception as exc:  # a pickle, a truncated file: safetensors refuses it (never unpickled)
        raise InputError(st, f"not a safetensors weights file ({type(exc).__name__}: {exc})") from exc
    # compared as dataclasses, so that weights saved before a field with a default existed (e.g.
    # morph_source) still load when that default describes them
    try:
        stored = None if inner is None else config_from_json(type(config), json.loads(inner))
    except (json.JSONDecodeError, TypeError, ConfigMismatchError) as exc:
        raise ConfigMismatchError(f"{st}: the config stored in the weights is unreadable ({exc})") from exc
    if stored != config:
        raise ConfigMismatchError(f"{st}: the config stored in the weights differs from {path.with_suffix('.json')}")
    try:
        state = load_file(str(st))
    except Exception as exc:
        raise InputError(st, f"unreadable safetensors weights ({type(exc).__name__}: {exc})") from exc
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ConfigMismatchError(f"{st}: tensors do not fit the model (missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]}, wrong shape {shapes[:5]})")
    module.load_state_dict(state, strict=True)
    return module
