"""A feature cache's record (``cache.json``), its arrays, and the checks that refuse a cache that
was not computed from the given backbone, model config and data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.errors import DiffrisError
from diffris.fileio import sha256sum

CACHE_FILE = "cache.json"
FORMAT = 2  # 2: cache.json records every array's sha256 and shape
DTYPE = "float32"
LATENTS = "posterior mode, unscaled"
NUM_TAPS = 4
TAP_KEYS = tuple(f"tap{i}" for i in range(NUM_TAPS))


class FeatureCacheError(DiffrisError):
    """A feature cache is missing, incomplete or was computed from other weights, data or sizes."""


def data_identity(data: Path, split: str) -> dict:
    """What a split's features depend on: its images and its expressions (the manifest)."""
    folder = Path(data) / split
    images, manifest = folder / "images.npy", folder / "manifest.jsonl"
    for path in (images, manifest):
        if not path.exists():
            raise FeatureCacheError(f"{path}: missing; run `diffris prepare` first")
    return {
        "images_sha256": sha256sum(images),
        "manifest_sha256": sha256sum(manifest),
        "num_samples": int(np.load(images, mmap_mode="r").shape[0]),
    }


@dataclass(frozen=True)
class TapSettings:
    """The model settings the UNet taps depend on besides the weights and the text."""

    timestep: int
    latent_scaling: bool


def read_cache_info(folder: Path) -> dict:
    path = Path(folder) / CACHE_FILE
    if not path.exists():
        raise FeatureCacheError(f"{path}: missing; run `diffris cache-features` first")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatureCacheError(f"{path}: not valid JSON ({err}); the cache is torn, rebuild it") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("dtype") != DTYPE:
        raise FeatureCacheError(
            f"{path}: format {_lookup(info, 'format')} / dtype {_lookup(info, 'dtype')}, expected {FORMAT} / {DTYPE}; "
            "rebuild it with `diffris cache-features`"
        )
    return info


def check_cache(folder: Path, split: str, data: Path, model) -> bool:
    """Refuse a cache that does not hold ``model``'s frozen features of ``data``'s ``split``.

    Returns whether its UNet taps can be used (they exist and the model's UNet input is frozen).
    """
    info, where = read_cache_info(folder), Path(folder) / CACHE_FILE
    backbone, config = model.backbone, model.config
    expected = {
        "image_size": prepared_image_size(data),
        "latents.vae_sha256": backbone.component_sha256("vae"),
        "text.text_sha256": backbone.text_sha256(),
        "text.text_length": config.text_max_length,
    }
    if split not in info["splits"]:
        raise FeatureCacheError(f"{where}: no split {split!r} (it has {', '.join(info['splits'])})")
    expected.update({f"splits.{split}.{k}": v for k, v in data_identity(data, split).items()})
    use_taps = info.get("unet_taps") is not None and model.unet_input_is_frozen
    if use_taps:
        expected["unet_taps.unet_sha256"] = backbone.component_sha256("unet")
        expected["unet_taps.timestep"] = config.timestep
        expected["unet_taps.latent_scaling"] = config.latent_scaling
    for key, value in expected.items():
        found = _lookup(info, key)
        if found != value:
            raise FeatureCacheError(
                f"{where}: {key} is {_short(found)} in the cache but {_short(value)} for backbone "
                f"{backbone.name} and data {data}; the cache is stale or belongs to other inputs: "
                "rebuild it with `diffris cache-features` or train without --features"
            )
    return use_taps


def _lookup(info: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(info, dict):
            return None
        info = info.get(part)
    return info


def _short(value) -> str:
    text = repr(value)
    return text[:19] + "…'" if isinstance(value, str) and len(value) == 64 else text


def prepared_image_size(data: Path) -> int:
    summary = Path(data) / "summary.json"
    if not summary.exists():
        raise FeatureCacheError(f"{summary}: missing; run `diffris prepare` first")
    try:
        return json.loads(summary.read_text())["image_size"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise FeatureCacheError(f"{summary}: not a prepare summary ({err!r}); run `diffris prepare` again") from None



def array_record(path: Path) -> dict:
    """What ``cache.json`` records of one array: its shape and the sha256 of its file."""
    return {"shape": list(np.load(path, mmap_mode="r").shape), "sha256": sha256sum(path)}


def load_array(path: Path, recorded: dict | None) -> np.ndarray:
    """A cached array, memory-mapped, refused unless it is the file ``cache.json`` recorded: a
    missing, torn or swapped file (say, another dataset's with the same shape) is named."""
    if not path.exists():
        raise FeatureCacheError(f"{path}: missing; the cache is incomplete, rebuild it")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise FeatureCacheError(f"{path}: not a readable .npy file ({err}); the cache is torn, rebuild it") from None
    if recorded is None:
        raise FeatureCacheError(f"{path}: not recorded in {path.parent.parent / CACHE_FILE}; rebuild the cache")
    if list(array.shape) != recorded["shape"] or sha256sum(path) != recorded["sha256"]:
        raise FeatureCacheError(
            f"{path}: not the array {path.parent.parent / CACHE_FILE} records (shape {list(array.shape)}, "
            f"recorded {recorded['shape']}, or another sha256); it was changed or copied in: rebuild the cache"
        )
    return array

