"""Raw layout -> training format: square resized arrays per split plus a manifest.

Images are resized bilinearly, masks with nearest neighbour (the LAVT/RMSIN convention: metrics
are computed at this network resolution). Repairs are counted, never silent:

- a mask whose size differs from its image (RRSIS-D ships JPEGs of 800×802 with 800×800 masks) is
  first resized to the image (nearest), then both are resized together;
- a grey-level mask with more than two levels is binarised at > 50 (the reference loaders' rule).

Output (see docs/interfaces.md): ``<out>/<split>/{images.npy, masks.npy, manifest.jsonl}`` and
``<out>/summary.json``. Everything is written to ``<out>.partial`` and moved into place at the end;
a failed run removes it. ``<out>`` must be new or an earlier output of prepare (``diffris.fileio``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tabulate import tabulate
from tqdm import tqdm

from diffris.config import SPLITS
from diffris.data.readers import RawSample, read_raw
from diffris.errors import ConfigError, DataError
from diffris.fileio import allocated_memmap, atomic_folder, check_out

IMAGE_SIZE_STEP = 32


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Resize image (bilinear) and mask (nearest) to size×size; also says if the mask had to be
    brought to the image's size first."""
    mismatched = mask.shape != image.shape[:2]
    mask_img = Image.fromarray(mask.astype(np.uint8))
    if mismatched:
        mask_img = mask_img.resize((image.shape[1], image.shape[0]), Image.NEAREST)
    out_mask = np.asarray(mask_img.resize((size, size), Image.NEAREST))
    return resize_image(image, size), out_mask.astype(np.uint8), mismatched


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized bilinearly to size×size: what the network sees of it."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def prepare(dataset: str, raw: Path, out: Path, image_size: int) -> dict:
    """Prepare every split of ``dataset`` found under ``raw``; returns the summary."""
    check_image_size(image_size)
    check_out(out, "prepare", [raw])
    samples = read_raw(dataset, raw)
    summary = {"dataset": dataset, "image_size": image_size, "splits": {}}

    def write(tmp: Path) -> None:
        for split in SPLITS:
            rows = [s for s in samples if s.split == split]
            if not rows:
                raise DataError(f"{raw}: no {split} samples in the {dataset} layout")
            summary["splits"][split] = prepare_split(rows, tmp / split, image_size, f"{dataset}/{split}")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    atomic_folder(out, write, "prepare", [raw])
    return summary


def check_image_size(size: int) -> None:
    """The network side the model takes: a positive multiple of 32, as the schema requires of
    ``scales.<scale>.image_size``; refused here rather than at train."""
    if size < IMAGE_SIZE_STEP or size % IMAGE_SIZE_STEP:
        raise ConfigError(f"--image-size: {size} is not a positive multiple of {IMAGE_SIZE_STEP} (e.g. 64, 480, 512)")


def prepare_split(rows: list[RawSample], out: Path, size: int, label: str) -> dict:
    """Write one split of ``rows`` into the new folder ``out`` (``images.npy``, ``masks.npy``,
    ``manifest.jsonl``) at ``size`` px; returns the split's summary with its repair counts.
    ``label`` names the split in the progress bar. The caller makes ``out`` atomic (``prepare``
    writes all three splits into one ``atomic_folder``)."""
    out.mkdir(parents=True)
    n = len(rows)
    images = allocated_memmap(out / "images.npy", np.uint8, (n, size, size, 3))
    masks = allocated_memmap(out / "masks.npy", np.uint8, (n, size, size))
    resized, binarised, empty = [], [], []
    with open(out / "manifest.jsonl", "w") as manifest:
        for i, sample in enumerate(tqdm(rows, desc=f"prepare {label}", unit="sample", leave=False, mininterval=1)):
            image = sample.load_image()
            mask, was_grey = sample.load_mask_checked()
            images[i], masks[i], mismatched = resize_pair(image, mask, size)
            if mismatched:
                resized.append(sample.sample_id)
            if was_grey:
                binarised.append(sample.sample_id)
            if not masks[i].any():
                empty.append(sample.sample_id)
            record = {
                "index": i,
                "sample_id": sample.sample_id,
                "expression": sample.expression,
                "orig_height": int(image.shape[0]),
                "orig_width": int(image.shape[1]),
                "category": sample.category,
            }
            manifest.write(json.dumps(record, sort_keys=True) + "\n")
    images.flush()
    masks.flush()
    del images, masks
    return {
        "samples": n,
        "mask_resized_to_image": len(resized),
        "mask_binarised": len(binarised),
        "mask_empty_after_resize": len(empty),
        "repaired_ids": {"mask_resized_to_image": resized, "mask_binarised": binarised, "mask_empty_after_resize": empty},
    }


def format_summary(summary: dict) -> str:
    rows = [
        [split, s["samples"], s["mask_resized_to_image"], s["mask_binarised"], s["mask_empty_after_resize"]]
        for split, s in summary["splits"].items()
    ]
    headers = ["split", "samples", "mask resized to image", "mask binarised", "mask empty after resize"]
    return f"{summary['dataset']} at {summary['image_size']}×{summary['image_size']}\n" + tabulate(rows, headers)
