"""Computing a feature cache (``diffris cache-features``): every split's frozen features, written
next to the output folder and renamed into place."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.config import SPLITS
from diffris.features.checks import (
    CACHE_FILE,
    DTYPE,
    FORMAT,
    LATENTS,
    TAP_KEYS,
    FeatureCacheError,
    TapSettings,
    array_record,
    data_identity,
    load_array,
    prepared_image_size,
    read_cache_info,
)
from diffris.fileio import allocated_memmap, atomic_folder


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
    prepared_image_size(data)  # a missing or torn summary is named
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
