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
        self.images = _load(folder / "images.npy")
        self.masks = _load(folder / "masks.npy")
        self.records = _manifest(folder / "manifest.jsonl")
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
            item["pixel_values"] = pixel_values(self.images[i])
        return item


def pixel_values(image: np.ndarray) -> torch.Tensor:
    """A prepared RGB uint8 image [S, S, 3] -> the model's input, float32 [3, S, S] in [-1, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy file ({err}); run `diffris prepare` again") from None


def _manifest(path: Path) -> list[dict]:
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not a JSON record ({err}); run `diffris prepare` again") from None
    return records
