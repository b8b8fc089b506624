"""Readers for the three datasets' real on-disk layouts.

``read_raw(dataset, root)`` is the only way into raw data, for real downloads and for the synthetic
twins alike. Each reader checks the whole layout before returning: a missing file, a phrase-file
line without an image, an empty expression or a duplicate id is a ``DataError`` naming the file
(and line). Layouts and quirks: ``../shared/research/datasets.md``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffris.errors import DataError

SPLITS = ("train", "val", "test")
# RefSegRS and RISBench masks: foreground is a grey value above 50 (the reference loaders' rule).
MASK_THRESHOLD = 50


@dataclass(frozen=True)
class RawSample:
    """One (image, expression, mask) triplet as the dataset stores it."""

    split: str
    sample_id: str
    expression: str
    image_path: Path
    category: str | None = None
    _mask_loader: Callable[[], tuple[np.ndarray, bool]] = field(repr=False, compare=False, default=None)

    def load_image(self) -> np.ndarray:
        """RGB uint8 array [H, W, 3]."""
        return load_rgb(self.image_path)

    def load_mask(self) -> np.ndarray:
        """Boolean mask [H, W] at the size the mask is stored in."""
        return self._mask_loader()[0]

    def load_mask_checked(self) -> tuple[np.ndarray, bool]:
        """The mask and whether it needed binarising (it held more than two grey levels)."""
        return self._mask_loader()


def read_raw(dataset: str, root: str | Path) -> list[RawSample]:
    """All samples of ``dataset`` (``rrsisd``, ``refsegrs`` or ``risbench``) found under ``root``."""
    readers = {"rrsisd": read_rrsisd, "refsegrs": read_refsegrs, "risbench": read_risbench}
    if dataset not in readers:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(readers)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    return readers[dataset](root)


# --------------------------------------------------------------------------- shared helpers


def load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGB", "L", "RGBA", "P", "I;16", "I"):
                raise DataError(f"{path}: unsupported image mode {img.mode!r}; expected RGB")
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


def load_grey_mask(path: Path) -> tuple[np.ndarray, bool]:
    """A grey-level mask file -> (mask > 50, whether it held more than two levels)."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read mask ({err})") from None
    if arr.ndim == 3:  # a grey mask saved as RGB: all channels must agree
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DataError(f"{path}: mask has {arr.shape[2]} differing channels; expected one grey channel")
        arr = arr[..., 0]
    levels = np.unique(arr)
    needs_repair = len(levels) > 2
    return arr > MASK_THRESHOLD, needs_repair


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} is missing")
    return path


def _add(samples: list[RawSample], where: dict[str, str], sample: RawSample, loc: str) -> None:
    """Append ``sample``; a second sample with the same id is an error naming both places."""
    if sample.sample_id in where:
        raise DataError(f"duplicate id {sample.sample_id!r}: {where[sample.sample_id]} and {loc}")
    where[sample.sample_id] = loc
    samples.append(sample)


# --------------------------------------------------------------------------- RRSIS-D


def read_rrsisd(root: Path) -> list[RawSample]:
    """``rrsisd/refs(unc).p`` + ``rrsisd/instances.json`` + ``images/rrsisd/JPEGImages``.

    Quirks handled: annotations use ``categories_id`` (plural); boxes are xyxy and ``area`` is not
    a pixel count (neither is used); ``segmentation`` is a list holding one RLE (compressed or not)
    or polygons; some JPEGs are not 800×800 while their RLE is (prepare resizes and counts them).
    The mask is the pixels covered exactly once by the listed segments, as RMSIN's loader does.
    """
    refs_path = _require(root / "rrsisd" / "refs(unc).p", "RRSIS-D refs pickle")
    inst_path = _require(root / "rrsisd" / "instances.json", "RRSIS-D instances file")
    image_dir = _require(root / "images" / "rrsisd" / "JPEGImages", "RRSIS-D image folder")
    refs = _load_pickle(refs_path)
    instances = _load_json(inst_path)
    for key in ("images", "annotations", "categories"):
        if key not in instances:
            raise DataError(f"{inst_path}: no {key!r} key; expected a COCO-like file")
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    categories = {c["id"]: c["name"] for c in instances["categories"]}

    samples, where = [], {}
    for k, ref in enumerate(refs):
        label = f"{refs_path} (ref #{k}, ref_id {ref.get('ref_id')})"
        try:
            split, ann_id, file_name = ref["split"], ref["ann_id"], ref["file_name"]
            sentences = ref["sentences"]
        except (KeyError, TypeError) as err:
            raise DataError(f"{label}: missing field {err}") from None
        if split not in SPLITS:
            raise DataError(f"{label}: split {split!r} is not one of {', '.join(SPLITS)}")
        if ann_id not in anns:
            raise DataError(f"{label}: ann_id {ann_id} has no annotation in {inst_path}")
        image_path = _require(image_dir / file_name, f"image of {label}")
        ann = anns[ann_id]
        image_info = images.get(ann["image_id"], {})
        if not sentences:
            raise DataError(f"{label}: no sentences")
        for j, sent in enumerate(sentences):
            expression = str(sent.get("raw") or sent.get("sent") or "").strip()
            if not expression:
                raise DataError(f"{label}: sentence {j} is empty")
            sample_id = str(ref["ref_id"]) if len(sentences) == 1 else f"{ref['ref_id']}_{j}"
            _add(
                samples,
                where,
                RawSample(
                    split=split,
                    sample_id=sample_id,
                    expression=expression,
                    image_path=image_path,
                    category=categories.get(ref.get("category_id")),
                    _mask_loader=_rle_loader(ann, image_info, f"{inst_path} (annotation {ann_id})"),
                ),
                label,
            )
    return samples


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DataError(f"{path}: cannot unpickle ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of refs, found {type(data).__name__}")
    return data


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _rle_loader(ann: dict, image_info: dict, label: str) -> Callable[[], tuple[np.ndarray, bool]]:
    def load() -> tuple[np.ndarray, bool]:
        from pycocotools import mask as coco_mask

        segments = ann.get("segmentation")
        if not segments:
            raise DataError(f"{label}: no segmentation")
        try:
            if isinstance(segments[0], list):  # polygons, as refer.py allows
                h, w = image_info["height"], image_info["width"]
                rles = coco_mask.frPyObjects(segments, h, w)
            else:
                rles = [
                    coco_mask.frPyObjects(s, *s["size"]) if isinstance(s["counts"], list) else s
                    for s in segments
                ]
                rles = [
                    {"size": r["size"], "counts": r["counts"].encode()} if isinstance(r["counts"], str) else r
                    for r in rles
                ]
            decoded = coco_mask.decode(rles)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{label}: cannot decode segmentation ({err})") from None
        summed = decoded.reshape(decoded.shape[0], decoded.shape[1], -1).sum(axis=2)
        return summed == 1, False

    return load


# --------------------------------------------------------------------------- RefSegRS


def read_refsegrs(root: Path) -> list[RawSample]:
    """``images/<id>.tif``, ``masks/<id>.tif``, ``output_phrase_{split}.txt`` lines ``<id> <phrase>``.

    Quirks handled: lines are unsorted (file order is kept), blank and trailing lines are skipped,
    several ids may show the same tile (they stay separate samples: ids are per expression).
    """
    image_dir = _require(root / "images", "RefSegRS image folder")
    mask_dir = _require(root / "masks", "RefSegRS mask folder")

    def paths(token: str, where: str) -> tuple[str, Path, Path]:
        if not token.isdigit():
            raise DataError(f"{where}: id {token!r} is not an integer")
        return token, image_dir / f"{token}.tif", mask_dir / f"{token}.tif"

    return _read_phrase_files(root, paths)


# --------------------------------------------------------------------------- RISBench


def read_risbench(root: Path) -> list[RawSample]:
    """``RISBench_dataset/{img_rgb,mask}/<split>_<i>_<j>.png`` + ``output_phrase_{split}.txt``.

    Lines are ``<file.png> <sentence>``; the sentence keeps its punctuation and inner spacing.
    ``root`` may be the folder holding ``RISBench_dataset/`` or that folder itself.
    """
    base = root / "RISBench_dataset"
    if not base.is_dir() and (root / "img_rgb").is_dir():
        base = root
    image_dir = _require(base / "img_rgb", "RISBench image folder")
    mask_dir = _require(base / "mask", "RISBench mask folder")

    def paths(token: str, where: str) -> tuple[str, Path, Path]:
        if not token.endswith(".png"):
            raise DataError(f"{where}: file name {token!r} does not end in .png")
        return token[: -len(".png")], image_dir / token, mask_dir / token

    return _read_phrase_files(base, paths)


def _read_phrase_files(base: Path, paths: Callable[[str, str], tuple[str, Path, Path]]) -> list[RawSample]:
    samples, where = [], {}
    for split in SPLITS:
        phrase_file = _require(base / f"output_phrase_{split}.txt", f"{split} phrase file")
        with open(phrase_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue  # blank or trailing lines carry no sample
            loc = f"{phrase_file}:{lineno}"
            token, _, expression = line.strip().partition(" ")
            expression = expression.strip()
            if not expression:
                raise DataError(f"{loc}: empty expression for {token!r}")
            sample_id, image_path, mask_path = paths(token, loc)
            _require(image_path, f"image named at {loc}")
            _require(mask_path, f"mask named at {loc}")
            _add(
                samples,
                where,
                RawSample(
                    split=split,
                    sample_id=sample_id,
                    expression=expression,
                    image_path=image_path,
                    _mask_loader=lambda p=mask_path: load_grey_mask(p),
                ),
                loc,
            )
    return samples
