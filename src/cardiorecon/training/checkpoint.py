"""Lightning checkpoints without pickles: tensors to safetensors, everything else to JSON.

Lightning's own `.ckpt` is a torch pickle; this CheckpointIO keeps the whole resume state
(weights, EMA, optimizer moments, loop counters) in `NAME.safetensors` + `NAME.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from cardiorecon.errors import InputError
from cardiorecon.io.nifti import atomic_write


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors, f"{path}.k{i}"), _encode(v, tensors, f"{path}.{k}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint without pickling")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` as path.safetensors + path.json (both atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "")
    # safetensors refuses tensors that share memory; store independent copies.
    tensors = {k: v.clone() for k, v in tensors.items()}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, str(tmp)), suffix=".safetensors")
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(tree)), suffix=".json")


def load_state(path: str | Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = Path(path)
    for p in (path.with_suffix(".safetensors"), path.with_suffix(".json")):
        if not p.is_file():
            raise InputError(p, "checkpoint file not found")
    return _decode(json.loads(path.with_suffix(".json").read_text()), load_file(str(path.with_suffix(".safetensors"))))


class SafetensorsCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        save_state(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_state(path)

    def remove_checkpoint(self, path: str | Path) -> None:
        for p in (Path(path).with_suffix(".safetensors"), Path(path).with_suffix(".json")):
            p.unlink(missing_ok=True)
