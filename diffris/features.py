"""Feature caches: what the frozen backbone makes of a prepared dataset, computed once.

The VAE, the CLIP text encoder and the UNet are frozen and deterministic (posterior mode, no
noise, no augmentation), so every run on the same data and backbone recomputes the same numbers
each epoch. ``diffris cache-features`` computes them once per (dataset, backbone)::

    features/<scale>/<dataset>/<backbone>/
      cache.json                   what the cache holds and what it was computed from (below)
      <split>/latents.npy          float32 [N, 4, S/8, S/8]  VAE posterior mode, unscaled
      <split>/text.npy             float32 [N, T, D]         CLIP last_hidden_state at T tokens
      <split>/attention_mask.npy   uint8   [N, T]
      <split>/tap{0,1,2,3}.npy     float32 UNet taps c1..c4 (only with --unet-taps)

``cache.json`` records the sha256 of the VAE, of the text encoder with its tokenizer files and
(with taps) of the UNet, the image size, the text length, the dtype, the timestep and latent
scaling the taps were computed with, per split the sha256 of ``images.npy`` and
``manifest.jsonl``, and the shape and sha256 of every array it holds. Training and evaluation
(``--features``) check all of it against the backbone, model config, data and array files they
were given and refuse a mismatch (``FeatureCacheError``); hashing the arrays costs about 1.3 s
per GB (0.77 GB/s on the 2-core development machine), some 3 s per open of an RRSIS-D train cache.

SD 1.x versions may share one VAE: ``--reuse-latents OTHER_CACHE`` hard-links (or copies) the
latents of another backbone's cache when its recorded VAE sha256, image size and data identity
equal this one's, and computes them otherwise; either way it says which it did.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.config import SPLITS
from diffris.errors import DiffrisError
from diffris.fileio import allocated_memmap, atomic_folder, sha256sum

CACHE_FILE = "cache.json"
FORMAT = 2  # 2: cache.json records every array's sha256 and shape
DTYPE = "float32"
LATENTS = "posterior mode, unscaled"
NUM_TAPS = 4
TAP_KEYS = tuple(f"tap{i}" for i in range(NUM_TAPS))


class FeatureCacheError(DiffrisError):
    """A feature cache is missing, incomplete or was computed from other weights, data or sizes."""


# --- identities ------------------------------------------------------------------------------


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
        "image_size": _prepared_image_size(data),
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


def _prepared_image_size(data: Path) -> int:
    summary = Path(data) / "summary.json"
    if not summary.exists():
        raise FeatureCacheError(f"{summary}: missing; run `diffris prepare` first")
    try:
        return json.loads(summary.read_text())["image_size"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise FeatureCacheError(f"{summary}: not a prepare summary ({err!r}); run `diffris prepare` again") from None


# --- reading ---------------------------------------------------------------------------------


class FeatureSplit:
    """A prepared split whose items carry cached features instead of pixels.

    Item ``i``: ``latents``, ``text``, ``attention_mask`` (and ``tap0..3`` when ``taps``), plus
    the prepared split's ``mask``, ``expression``, ``sample_id`` and ``index``.
    """

    def __init__(self, folder: Path, split: str, data: Path, taps: bool):
        from diffris.data.dataset import PreparedSplit

        self.prepared = PreparedSplit(data, split, pixels=False)
        names = ("latents", "text", "attention_mask", *(TAP_KEYS if taps else ()))
        recorded = read_cache_info(folder).get("arrays", {}).get(split, {})
        self.arrays = {name: load_array(Path(folder) / split / f"{name}.npy", recorded.get(name)) for name in names}
        for name, array in self.arrays.items():
            if len(array) != len(self.prepared):
                raise FeatureCacheError(f"{Path(folder) / split / name}.npy: {len(array)} rows, the split has {len(self.prepared)}")
        self.image_size = self.prepared.image_size

    def __len__(self) -> int:
        return len(self.prepared)

    def __getitem__(self, i: int) -> dict:
        import torch

        item = self.prepared[i]
        for name, array in self.arrays.items():
            item[name] = torch.from_numpy(np.array(array[i]))
        item["image_size"] = self.image_size
        return item


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


def open_split(data: Path, split: str, model, features: Path | None):
    """The dataset training and evaluation read: cached features when ``features`` is given
    (checked against ``model`` and ``data``), else the prepared pixels."""
    from diffris.data.dataset import PreparedSplit

    if features is None:
        return PreparedSplit(data, split)
    taps = check_cache(features, split, data, model)
    return FeatureSplit(features, split, data, taps)


def model_inputs(model, batch: dict, device, memory_format=None) -> dict:
    """Keyword arguments of ``model(...)`` for a batch of either dataset, on ``device``."""
    import torch

    from diffris.models.model import BackboneFeatures

    memory_format = memory_format or torch.preserve_format
    if "text" in batch:
        taps = [batch[k] for k in TAP_KEYS] if TAP_KEYS[0] in batch else None
        size = int(batch["image_size"][0])
        features = BackboneFeatures(
            text=batch["text"], attention_mask=batch["attention_mask"], image_size=(size, size),
            latents=None if taps else batch["latents"], taps=taps,
        )  # fmt: skip
        return {"features": features.to(device, memory_format)}
    input_ids, attention_mask = model.tokenize(batch["expression"])
    pixels = batch["pixel_values"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return {"pixel_values": pixels, "input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


class SwappedExpressions:
    """``base`` with sample ``i`` reading the expression (and its cached text features) of sample
    ``sources[i]``; cached UNet taps, which depend on the text, are dropped so the UNet runs."""

    TEXT_KEYS = ("expression", "text", "attention_mask")

    def __init__(self, base, sources: list[int]):
        self.base, self.sources = base, sources

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item, other = self.base[i], self.base[self.sources[i]]
        for key in self.TEXT_KEYS:
            if key in other:
                item[key] = other[key]
        for key in TAP_KEYS:
            item.pop(key, None)
        return item


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRequest:
    data: Path
    backbone_dir: Path
    out: Path
    text_length: int
    taps: TapSettings | None = None
    reuse_latents: Path | None = None
    batch_size: int = 32


def build_cache(request: CacheRequest) -> Path:
    """Compute every split's features into ``request.out`` (written next to it, then renamed)."""
    import torch

    from diffris.models.backbone import FrozenBackbone

    backbone = FrozenBackbone.from_folder(request.backbone_dir)
    if request.text_length > backbone.max_text_length:
        raise FeatureCacheError(
            f"--text-length {request.text_length} exceeds {backbone.name}'s {backbone.max_text_length} positions"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(device)
    info = _cache_info(request, backbone)
    donor = _latent_donor(request, info)

    def write(tmp: Path) -> None:
        for split in info["splits"]:
            (tmp / split).mkdir()
            if donor is not None:
                source = donor / split / "latents.npy"
                load_array(source, read_cache_info(donor).get("arrays", {}).get(split, {}).get("latents"))
                _link(source, tmp / split / "latents.npy")
            _compute_split(request, backbone, device, split, tmp / split, latents=donor is None)
            arrays = sorted((tmp / split).glob("*.npy"))
            info["arrays"][split] = {path.stem: array_record(path) for path in arrays}
        (tmp / CACHE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    inputs = [request.data, request.backbone_dir, request.reuse_latents]
    return atomic_folder(Path(request.out), write, "cache-features", inputs)


def _cache_info(request: CacheRequest, backbone) -> dict:
    data = Path(request.data)
    _prepared_image_size(data)  # a missing or torn summary is named
    summary = json.loads((data / "summary.json").read_text())
    splits = [s for s in SPLITS if s in summary.get("splits", {})]
    info = {
        "format": FORMAT,
        "dtype": DTYPE,
        "dataset": summary.get("dataset"),
        "backbone": backbone.name,
        "image_size": summary["image_size"],
        "splits": {split: data_identity(data, split) for split in splits},
        "latents": {
            "kind": LATENTS,
            "vae_sha256": backbone.component_sha256("vae"),
            "scaling_factor": backbone.vae.config.scaling_factor,
            "reused_from": None,
        },
        "text": {"text_sha256": backbone.text_sha256(), "text_length": request.text_length},
        "unet_taps": None,
        "arrays": {},
    }
    if request.taps is not None:
        info["unet_taps"] = {
            "unet_sha256": backbone.component_sha256("unet"),
            "timestep": request.taps.timestep,
            "latent_scaling": request.taps.latent_scaling,
        }
    return info


def _latent_donor(request: CacheRequest, info: dict) -> Path | None:
    """The cache whose latents this one may reuse: same VAE sha256, image size and data."""
    if request.reuse_latents is None:
        return None
    try:
        other = read_cache_info(request.reuse_latents)
    except FeatureCacheError as err:
        print(f"cache-features: computing the latents (cannot reuse: {err})")
        return None
    same = {
        "VAE sha256": other["latents"]["vae_sha256"] == info["latents"]["vae_sha256"],
        "image size": other["image_size"] == info["image_size"],
        "data": all(other["splits"].get(s) == ident for s, ident in info["splits"].items()),
    }
    if not all(same.values()):
        differs = ", ".join(k for k, v in same.items() if not v)
        print(f"cache-features: computing the latents ({request.reuse_latents} differs in: {differs})")
        return None
    info["latents"]["reused_from"] = other["backbone"]
    print(
        f"cache-features: reusing the latents of {other['backbone']} ({request.reuse_latents}): "
        f"same VAE sha256 {info['latents']['vae_sha256'][:16]}…, image size and data"
    )
    return Path(request.reuse_latents)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _compute_split(request: CacheRequest, backbone, device, split: str, folder: Path, latents: bool) -> None:
    """Batch by batch in fp32, into memory-mapped .npy files."""
    import torch
    from tqdm.auto import tqdm

    from diffris.data.dataset import PreparedSplit

    dataset = PreparedSplit(request.data, split)
    loader = torch.utils.data.DataLoader(dataset, batch_size=request.batch_size, shuffle=False)
    arrays: dict[str, np.ndarray] = {}
    start = 0
    for batch in tqdm(loader, desc=f"features {backbone.name}/{split}", unit="batch", leave=False):
        rows = _batch_features(request, backbone, device, batch, latents)
        for name, values in rows.items():
            if name not in arrays:
                shape = (len(dataset), *values.shape[1:])
                arrays[name] = allocated_memmap(folder / f"{name}.npy", values.dtype, shape)
            arrays[name][start : start + len(values)] = values
        start += len(batch["index"])
    for array in arrays.values():
        array.flush()


def _batch_features(request: CacheRequest, backbone, device, batch: dict, latents: bool) -> dict[str, np.ndarray]:
    import torch

    enc = backbone.tokenizer(
        list(batch["expression"]), padding="max_length", max_length=request.text_length,
        truncation=True, return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        text = backbone.encode_text(enc["input_ids"].to(device))
        out = {"text": text, "attention_mask": enc["attention_mask"].to(torch.uint8)}
        if latents or request.taps is not None:
            mode = backbone.encode_image(batch["pixel_values"].to(device), scaled=False)
            if latents:
                out["latents"] = mode
        if request.taps is not None:
            scaled = mode * backbone.vae.config.scaling_factor if request.taps.latent_scaling else mode
            out.update(zip(TAP_KEYS, backbone.unet_features(scaled, request.taps.timestep, text)))
    return {name: t.detach().float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for name, t in out.items()}


# --- command line ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser(
        "cache-features",
        help="compute a prepared dataset's frozen features once: VAE latents, CLIP text, optionally UNet taps",
        description=__doc__.split("\n\n")[1],
    )
    cache.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    cache.add_argument("--backbone-dir", required=True, type=Path, help="backbone folder (fetch-weights)")
    cache.add_argument("--out", required=True, type=Path, help="cache folder to write")
    cache.add_argument("--text-length", required=True, type=int, help="CLIP tokens (the model's text_max_length)")
    cache.add_argument(
        "--unet-taps", action="store_true",
        help="also cache the UNet taps (valid for models whose CP-adapter is off)",
    )  # fmt: skip
    cache.add_argument("--timestep", type=int, default=1, help="UNet timestep of the taps (default: 1)")
    cache.add_argument(
        "--latent-scaling", action=argparse.BooleanOptionalAction, default=True,
        help="the taps' UNet input is the latents times the VAE scaling factor (default: yes)",
    )  # fmt: skip
    cache.add_argument("--reuse-latents", type=Path, help="another backbone's cache whose latents to reuse if its VAE is the same")
    cache.add_argument("--batch-size", type=int, default=32, help="samples per forward (default: 32)")
    cache.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    cache.set_defaults(handler=run_cache_features)


def run_cache_features(args: argparse.Namespace) -> int:
    from diffris.train import set_cpu_threads

    set_cpu_threads(args.cpu_threads)
    taps = TapSettings(args.timestep, args.latent_scaling) if args.unet_taps else None
    request = CacheRequest(
        data=args.data, backbone_dir=args.backbone_dir, out=args.out, text_length=args.text_length,
        taps=taps, reuse_latents=args.reuse_latents, batch_size=args.batch_size,
    )  # fmt: skip
    out = build_cache(request)
    info = read_cache_info(out)
    counts = ", ".join(f"{s} {v['num_samples']}" for s, v in info["splits"].items())
    print(f"written: {out} ({counts}; text length {args.text_length}; UNet taps: {'yes' if taps else 'no'})")
    return 0
