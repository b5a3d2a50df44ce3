"""Lightning checkpoints without pickles: tensors to safetensors, everything else to JSON.

Lightning's own `.ckpt` is a torch pickle; this CheckpointIO keeps the whole resume state
(weights, EMA, optimizer moments, loop counters) in one file, `NAME.safetensors`, the JSON tree
in its metadata (written with one atomic rename).
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
    """Write `state` as one file, path.safetensors: the tensors, and the rest of the tree as JSON in
    its metadata. One file means one rename: a crash leaves the old checkpoint or the new one,
    never the tensors of one and the counters of the other."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "")
    # safetensors refuses tensors that share memory; store independent copies.
    tensors = {k: v.clone() for k, v in tensors.items()}
    meta = {"cardiorecon_checkpoint": json.dumps(tree)}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                 suffix=".safetensors")
    path.with_suffix(".json").unlink(missing_ok=True)  # the two-file form of earlier versions


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_state` (or the older pair path.safetensors + path.json)."""
    from safetensors import safe_open

    path = Path(path)
    file = path.with_suffix(".safetensors")
    if not file.is_file():
        raise InputError(file, "checkpoint file not found")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "cardiorecon_checkpoint" in meta:
            tree = json.loads(meta["cardiorecon_checkpoint"])
        else:
            legacy = path.with_suffix(".json")
            if not legacy.is_file():
                raise InputError(file, "not a cardiorecon checkpoint (no state in its metadata, no .json beside it)")
            tree = json.loads(legacy.read_text())
        return _decode(tree, tensors)
    except InputError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise InputError(file, f"unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


class SafetensorsCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        save_state(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_state(path)

    def remove_checkpoint(self, path: str | Path) -> None:
        for p in (Path(path).with_suffix(".safetensors"), Path(path).with_suffix(".json")):
            p.unlink(missing_ok=True)
