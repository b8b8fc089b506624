"""torch Dataset over a prepared split (see docs/interfaces.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from diffris.errors import DataError


class PreparedSplit(Dataset):
    """Item ``i``: ``pixel_values`` float32 [3, S, S] in [-1, 1], ``mask`` bool [S, S],
    ``expression``, ``sample_id``, ``index``. Arrays are memory-mapped, so workers share them.
    With ``pixels=False`` items carry no ``pixel_values`` (a feature cache stands in for them)."""

    def __init__(self, root: str | Path, split: str, pixels: bool = True):
        self.pixels = pixels
        folder = Path(root) / split
        for name in ("images.npy", "masks.npy", "manifest.jsonl"):
            if not (folder / name).exists():
                raise DataError(f"{folder / name}: missing; run `diffris prepare` first")
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.masks = np.load(folder / "masks.npy", mmap_mode="r")
        with open(folder / "manifest.jsonl") as f:
            self.records = [json.loads(line) for line in f]
        if not len(self.records) == len(self.images) == len(self.masks):
            raise DataError(
                f"{folder}: {len(self.records)} manifest rows but {len(self.images)} images "
                f"and {len(self.masks)} masks"
            )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        item = {
            "mask": torch.from_numpy(np.array(self.masks[i])).bool(),
            "expression": record["expression"],
            "sample_id": record["sample_id"],
            "index": i,
        }
        if self.pixels:
            item["pixel_values"] = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).float() / 127.5 - 1.0
        return item
