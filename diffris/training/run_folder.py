"""A training run's folder: what it holds and how to open it.

``diffris train`` writes it, ``diffris evaluate`` (and anything else that uses a trained model)
reads it::

    config.json        resolved run config (experiment, dataset, seed, model, train budget, backbone)
    state.pt           resume state (weights, optimiser, scheduler, RNG, counters)
    log.jsonl          one record per step (loss, lr, samples/s, peak memory) and per epoch (val)
    best.safetensors   best-on-val weights so far (only with ``select: best-val``)
    model.safetensors  the weights that evaluation uses, written when training is complete
    trained.json       written last: the run config's sha256 and the weights' info
    .diffris-out.json  the marker: this folder is train's (diffris.fileio)

The run config's identity leaves out the paths (``PATH_KEYS``): a run may be resumed, or
evaluated, with its data, backbone and feature cache moved.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from diffris.training.checkpoint import CheckpointError, load_trainable, load_weights
from diffris.errors import DataError
from diffris.fileio import MARKER, OutputError, foreign_files, owned_by

CONFIG_FILE, STATE_FILE, LOG_FILE = "config.json", "state.pt", "log.jsonl"
BEST_FILE, MODEL_FILE, DONE_FILE = "best.safetensors", "model.safetensors", "trained.json"
RUN_FILES = [CONFIG_FILE, STATE_FILE, LOG_FILE, BEST_FILE, MODEL_FILE, DONE_FILE, ".*.tmp-*"]  # all train writes
PATH_KEYS = ("data", "backbone_dir", "features")  # may move (or be dropped) between a run and its resumption


# --- the config ------------------------------------------------------------------------------


def check_run_folder(folder: Path) -> None:
    """Refuse a ``--out`` that train may not resume or replace: not a folder, or one that train
    did not make (no marker), or that holds other files. A run folder from before the marker
    (a config.json and only run files) is accepted."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder}: exists and is not a folder")
    legacy = (folder / CONFIG_FILE).exists() and not (folder / MARKER).exists()
    if legacy and next(foreign_files(folder, RUN_FILES), None) is None:
        return
    if folder.exists():
        owned_by(folder, "train")


def config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config_identity(config), sort_keys=True).encode()).hexdigest()


def config_identity(config: dict) -> dict:
    """The part of a run config that must not change between a run and its resumption."""
    return {k: v for k, v in config.items() if k not in PATH_KEYS}


def first_difference(old: dict, new: dict, prefix: str = "") -> str:
    """``key: old there, new now`` for the first key (in sorted order, paths aside) that differs."""
    for key in sorted(set(old) | set(new)):
        if key in PATH_KEYS and not prefix:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return ""


def load_run_config(run: Path) -> dict:
    path = Path(run) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing; is {run} a training run folder?")
    return read_run_config(run)


def read_run_config(run: Path) -> dict:
    """A run folder's config.json; a torn or foreign one is named, not a traceback."""
    path = Path(run) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path}: not valid JSON ({err}); expected the run config `diffris train` writes: "
            "delete the run folder to train it anew"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object (the run config), found {type(config).__name__}")
    return config


# --- what a run needs ------------------------------------------------------------------------


def build_run_model(model_config: dict, backbone_dir: Path) -> torch.nn.Module:
    """The model of a run config's ``model`` section (as written to config.json)."""
    from diffris.models import build_model
    from diffris.models.config import saved_model_config

    if not Path(backbone_dir).is_dir():
        raise DataError(f"{backbone_dir}: no backbone folder; run `diffris fetch-weights` first")
    return build_model(saved_model_config(model_config), backbone_dir)


def check_prepared(data: Path, dataset: str, image_size: int, split: str) -> None:
    """The prepared folder holds ``split`` of ``dataset`` at ``image_size`` (its summary.json)."""
    summary = Path(data) / "summary.json"
    if not summary.exists():
        raise DataError(f"{summary}: missing; run `diffris prepare` first")
    prepared = json.loads(summary.read_text())
    if prepared.get("dataset") != dataset:
        raise DataError(f"{summary}: holds {prepared.get('dataset')!r}, not {dataset!r}")
    if split not in prepared.get("splits", {}):
        raise DataError(f"{summary}: no split {split!r}")
    if prepared.get("image_size") != image_size:
        raise DataError(f"{summary}: prepared at {prepared.get('image_size')}px, the run uses {image_size}px")


def mixed_precision(choice: str) -> str:
    """accelerate's precision ("bf16" or "no") for train.mixed_precision auto | bf16 | fp32."""
    if choice == "auto":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if supported else "no"
    return "bf16" if choice == "bf16" else "no"


def load_trained_model(run: Path, backbone_dir: Path | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """The model of a finished run with its selected weights; also its config and weights info."""
    config = load_run_config(run)
    path = Path(run) / MODEL_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing; the training of {run} has not finished")
    model = build_run_model(config["model"], Path(backbone_dir or config["backbone_dir"]))
    weights, info = load_weights(path, model.backbone_info())
    load_trainable(model, weights, path)
    return model, config, info
