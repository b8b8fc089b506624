"""Checkpoint files of a training run.

Two kinds, both written atomically (temporary file in the same folder, fsync, rename), so a run
killed at any moment leaves either the previous file or the new one, never a torn one:

- weights (``*.safetensors``): the trainable parameters only, with the backbone they were trained
  on (name, revision, sha256 of its weights) and a small JSON ``info`` in the metadata;
- resume state (``state.pt``): weights, optimiser, scheduler, RNG states and counters.

Both refuse to load onto a model whose backbone differs from the recorded one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffris.errors import DiffrisError
from diffris.fileio import atomic_write

BACKBONE_KEYS = ("name", "revision", "weights_sha256")
METADATA_KEY = "diffris"
STATE_KEYS = {"backbone", "weights", "optimizer", "scheduler", "rng", "counters"}


class CheckpointError(DiffrisError):
    """A checkpoint is unreadable, incomplete or belongs to another backbone or config."""


def check_backbone(path: Path, recorded: dict, current: dict) -> None:
    """Raise CheckpointError unless the recorded backbone is the model's backbone."""
    recorded = {key: recorded.get(key) for key in BACKBONE_KEYS}
    current = {key: current.get(key) for key in BACKBONE_KEYS}
    if recorded != current:
        raise CheckpointError(
            f"{path}: trained on backbone {_describe(recorded)}, but the model was built on "
            f"{_describe(current)}; refusing to load it onto another backbone"
        )


def _describe(backbone: dict) -> str:
    sha = backbone["weights_sha256"] or "?"
    return f"{backbone['name']!r} (revision {backbone['revision']}, weights sha256 {sha[:12]})"


def save_weights(path: Path, weights: dict[str, torch.Tensor], backbone: dict, info: dict) -> None:
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in weights.items()}
    record = {"backbone": {k: backbone[k] for k in BACKBONE_KEYS}, "info": info}
    # One metadata key: safetensors writes several in no fixed order, and files should be stable.
    metadata = {METADATA_KEY: json.dumps(record, sort_keys=True)}
    atomic_write(path, lambda tmp: _written(tmp, lambda: save_file(tensors, str(tmp), metadata=metadata)))


def read_weights_info(path: Path) -> tuple[dict, dict]:
    """The (backbone, info) metadata of a weights file, without loading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: no backbone record in the metadata; not a diffris checkpoint")
    try:
        record = json.loads(metadata[METADATA_KEY])
        return record["backbone"], record["info"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable backbone record in the metadata ({err!r})") from None


def load_weights(path: Path, backbone: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and info of a weights file trained on ``backbone``."""
    recorded, info = read_weights_info(path)
    check_backbone(path, recorded, backbone)
    with safe_open(str(path), framework="pt") as f:
        weights = {name: f.get_tensor(name) for name in f.keys()}
    return weights, info


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Put ``weights`` into the trainable parameters of ``model``; they must match exactly."""
    expected = set(model.trainable_state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit the model: missing {missing[:3]} ({len(missing)} in all), "
            f"unexpected {unexpected[:3]} ({len(unexpected)} in all)"
        )
    model.load_state_dict(weights, strict=False)


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: _written(tmp, lambda: torch.save(state, tmp)))


def _written(path: Path, save) -> None:
    """Run ``save``; torch and safetensors report a failed write (a full disk) as RuntimeError."""
    try:
        save()
    except RuntimeError as err:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({err}); check free space and permissions") from None


def load_state(path: Path, backbone: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable resume state ({err})") from None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise CheckpointError(f"{path}: not a resume state of `diffris train` (expected keys {sorted(STATE_KEYS)})")
    check_backbone(path, state["backbone"], backbone)
    return state


def rng_state() -> dict:
    """Python, numpy and torch (CPU and every CUDA device) generator states, torch-serialisable."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a serialisation round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
