"""The datasets training and evaluation read: cached features or prepared pixels, and the
model inputs of a batch of either."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffris.features.checks import TAP_KEYS, FeatureCacheError, check_cache, load_array, read_cache_info


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

