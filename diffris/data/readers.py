"""Readers for the three datasets' real on-disk layouts.

``read_raw(dataset, root)`` is the only way into raw data, for real downloads and for the synthetic
twins alike. Each reader checks the whole layout before returning: a missing file, a phrase-file
line without an image, an empty expression or a duplicate id is a ``DataError`` naming the file
(and line). Layouts and quirks: README.md, Datasets.
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
# Image modes Pillow converts to 8-bit RGB correctly, and wide grey modes with their full scale.
NARROW_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
WIDE_GREY = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 2**32 - 1}


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
    """An image file as RGB uint8 [H, W, 3], whatever its bit depth: 1-bit and 8-bit modes are
    converted by Pillow (16 bits per channel in RGB files arrive as their high byte), 16- and
    32-bit grey values are scaled to 0..255; floating-point pixels are refused."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb8(img, path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


def _to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode in WIDE_GREY:
        grey = np.asarray(img).astype(np.int64)
        if grey.min() < 0:
            raise DataError(f"{path}: negative pixel values in a {img.mode!r} image; expected unsigned grey levels")
        scaled = (grey * 255 + WIDE_GREY[img.mode] // 2) // WIDE_GREY[img.mode]
        return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode not in NARROW_MODES:
        raise DataError(f"{path}: unsupported image mode {img.mode!r}; expected RGB or grey with integer levels")
    return np.asarray(img.convert("RGB"))


def load_grey_mask(path: Path) -> tuple[np.ndarray, bool]:
    """A grey-level mask file -> (stored value > 50, whether it held more than two levels).

    As the reference loaders (OpenCV's any-depth grey read), the threshold applies to the stored
    values at their own bit depth; a 1-bit mask is its set pixels, a palette mask its grey levels."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("1", "P", "PA"):
                img = img.convert("L")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read mask ({err})") from None
    if arr.ndim == 3:  # a grey mask saved as RGB: all channels must agree
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DataError(f"{path}: mask has {arr.shape[2]} differing channels; expected one grey channel")
        arr = arr[..., 0]
    levels = np.unique(arr)
    needs_repair = len(levels) > 2
    return arr > MASK_THRESHOLD, needs_repair


def _inside(base: Path, name: str, where: str) -> Path:
    """``base / name``, refused if ``name`` (from a metadata file) leads out of ``base``."""
    path = base / name
    if Path(name).is_absolute() or base.resolve() not in path.resolve().parents:
        raise DataError(f"{where}: file name {name!r} leads outside {base}")
    return path


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
    anns = _index(instances, "annotations", ("id", "image_id"), inst_path)
    images = _index(instances, "images", ("id",), inst_path)
    categories = {c["id"]: c["name"] for c in _index(instances, "categories", ("id", "name"), inst_path).values()}

    samples, where = [], {}
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DataError(f"{refs_path} (ref #{k}): expected a dict, found {type(ref).__name__}")
        label = f"{refs_path} (ref #{k}, ref_id {ref.get('ref_id')})"
        try:
            split, ann_id, file_name = ref["split"], ref["ann_id"], ref["file_name"]
            sentences, ref_id = ref["sentences"], ref["ref_id"]
        except KeyError as err:
            raise DataError(f"{label}: missing field {err}") from None
        if split not in SPLITS:
            raise DataError(f"{label}: split {split!r} is not one of {', '.join(SPLITS)}")
        if ann_id not in anns:
            raise DataError(f"{label}: ann_id {ann_id} has no annotation in {inst_path}")
        if not isinstance(file_name, str):
            raise DataError(f"{label}: file_name {file_name!r} is not a string")
        image_path = _require(_inside(image_dir, file_name, label), f"image of {label}")
        ann = anns[ann_id]
        image_info = images.get(ann["image_id"], {})
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{label}: no sentences (expected a list of dicts with 'raw' or 'sent')")
        for j, sent in enumerate(sentences):
            if not isinstance(sent, dict):
                raise DataError(f"{label}: sentence {j} is a {type(sent).__name__}, expected a dict")
            expression = str(sent.get("raw") or sent.get("sent") or "").strip()
            if not expression:
                raise DataError(f"{label}: sentence {j} is empty")
            sample_id = str(ref_id) if len(sentences) == 1 else f"{ref_id}_{j}"
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
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _index(instances: dict, key: str, fields: tuple[str, ...], path: Path) -> dict:
    """``instances[key]`` by id; every record must be a dict with ``fields``."""
    records = instances[key]
    if not isinstance(records, list):
        raise DataError(f"{path}: {key!r} is a {type(records).__name__}, expected a list")
    index = {}
    for k, record in enumerate(records):
        missing = [f for f in fields if not isinstance(record, dict) or f not in record]
        if missing:
            raise DataError(f"{path}: {key}[{k}] has no {missing[0]!r}; expected a dict with {', '.join(fields)}")
        index[record["id"]] = record
    return index


def _rle_loader(ann: dict, image_info: dict, label: str) -> Callable[[], tuple[np.ndarray, bool]]:
    def load() -> tuple[np.ndarray, bool]:
        from pycocotools import mask as coco_mask

        segments = ann.get("segmentation")
        if not segments or not isinstance(segments, list):
            raise DataError(f"{label}: no segmentation (expected a list of RLEs or polygons)")
        try:
            if isinstance(segments[0], list):  # polygons, as refer.py allows
                h, w = image_info["height"], image_info["width"]
                rles = coco_mask.frPyObjects(segments, h, w)
            else:
                rles = [_checked_rle(s, f"{label}, segment {k}") for k, s in enumerate(segments)]
                rles = [coco_mask.frPyObjects(r, *r["size"]) if isinstance(r["counts"], list) else r for r in rles]
            decoded = coco_mask.decode(rles)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise DataError(f"{label}: cannot decode segmentation ({err})") from None
        summed = decoded.reshape(decoded.shape[0], decoded.shape[1], -1).sum(axis=2)
        return summed == 1, False

    return load


def _checked_rle(segment, label: str) -> dict:
    """A COCO RLE whose runs cover its ``size`` exactly; pycocotools would decode a short or
    empty ``counts`` from uninitialised memory."""
    if not isinstance(segment, dict) or "size" not in segment or "counts" not in segment:
        raise DataError(f"{label}: expected an RLE dict with 'size' and 'counts'")
    size, counts = segment["size"], segment["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise DataError(f"{label}: RLE size {size!r} is not [height, width]")
    runs = rle_runs(counts, label) if isinstance(counts, str) else counts
    if not isinstance(runs, list) or not all(isinstance(r, int) and r >= 0 for r in runs):
        raise DataError(f"{label}: RLE counts must be a string or a list of non-negative integers")
    if sum(runs) != size[0] * size[1]:
        raise DataError(f"{label}: RLE runs cover {sum(runs)} pixels, its size {size[0]}x{size[1]} has {size[0] * size[1]}")
    return {"size": size, "counts": counts.encode("ascii")} if isinstance(counts, str) else segment


def rle_runs(counts: str, label: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p == len(counts):
                raise DataError(f"{label}: RLE counts string ends inside a run")
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


# --------------------------------------------------------------------------- RefSegRS


def read_refsegrs(root: Path) -> list[RawSample]:
    """``images/<id>.tif``, ``masks/<id>.tif``, ``output_phrase_{split}.txt`` lines ``<id> <phrase>``.

    Quirks handled: lines are unsorted (file order is kept), blank lines are skipped (the real
    files have none, but an edited one may), several ids may show the same tile, with another
    category or with a synonym of the same mask (they stay separate samples: ids are per
    expression), and masks may hold grey levels (foreground is > 50, counted by prepare).
    """
    image_dir = _require(root / "images", "RefSegRS image folder")
    mask_dir = _require(root / "masks", "RefSegRS mask folder")

    def paths(token: str, where: str) -> tuple[str, Path, Path]:
        if not (token.isascii() and token.isdigit()):
            raise DataError(f"{where}: id {token!r} is not an integer")
        return token, image_dir / f"{token}.tif", mask_dir / f"{token}.tif"

    return _read_phrase_files(root, paths)


# --------------------------------------------------------------------------- RISBench


def read_risbench(root: Path) -> list[RawSample]:
    """``RISBench_dataset/{img_rgb,mask}/<split>_<i>_<j>.png`` + ``output_phrase_{split}.txt``.

    Lines are ``<file.png> <sentence>``; the sentence keeps its punctuation (hyphens, apostrophes)
    and inner spacing. A source image with several referents is stored once per referent, under
    the same ``<split>_<i>_`` prefix. ``root`` may be the folder holding ``RISBench_dataset/`` or
    that folder itself.
    """
    base = root / "RISBench_dataset"
    if not base.is_dir() and (root / "img_rgb").is_dir():
        base = root
    image_dir = _require(base / "img_rgb", "RISBench image folder")
    mask_dir = _require(base / "mask", "RISBench mask folder")

    def paths(token: str, where: str) -> tuple[str, Path, Path]:
        if not token.endswith(".png") or token == ".png":
            raise DataError(f"{where}: file name {token!r} does not end in .png")
        return token[: -len(".png")], _inside(image_dir, token, where), _inside(mask_dir, token, where)

    return _read_phrase_files(base, paths)


def _read_phrase_files(base: Path, paths: Callable[[str, str], tuple[str, Path, Path]]) -> list[RawSample]:
    samples, where = [], {}
    for split in SPLITS:
        phrase_file = _require(base / f"output_phrase_{split}.txt", f"{split} phrase file")
        for lineno, line in enumerate(_phrase_lines(phrase_file), start=1):
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


def _phrase_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 phrase file; a byte that is not UTF-8 is named by its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); expected UTF-8") from None
