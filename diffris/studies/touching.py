"""Hard and soft assignment where objects touch: RRSIS-D-style test scenes in which a second
object lies at a controlled relation to the target, and IoU per relation.

Each scene is drawn like the rrsisd twin's (``diffris.data.scenes``: same object kinds, ground,
painting and image size; expressions from ``rrsisd_expression``, category style) but holds a
*neighbour*: an object of another category, in another colour where its kind has one, placed
along a random direction from the target at the distance that puts it in the sample's bin.
Two more distractors of other categories lie apart from the target.

Relations (``BINS``), measured on the raw masks (``raw_image_size``):

- ``overlap`` = |target ∩ neighbour| / |target|: the share of the target's pixels that the
  neighbour's full shape covers. The target is painted last, on top, so the neighbour lies
  partly under it, the ground-truth mask is the whole target, and the boundary between the two
  is the target's own. At least half of the neighbour stays visible.
- ``gap`` = the smallest distance between a target pixel and a neighbour pixel (pixel centres,
  raw pixels; 0 when they overlap). ``touching``: no overlap and gap <= 1.5 (8-adjacent pixels);
  ``apart``, the control: gap between 4.5 % and 8 % of the side (5.8-10.2 px at 128, about
  3-5 px at the network's 64).

Samples cycle through the bins (sample i is in ``BINS[i % len(BINS)]``), each drawn from
``default_rng([seed, i])``: equal counts per bin, the same bytes for a seed.

``diffris make-touching`` writes the prepared test split (``diffris.data.prepare``'s format,
declared as ``rrsisd`` so that runs trained on RRSIS-D evaluate on it)::

    <out>/test/{images.npy, masks.npy, manifest.jsonl}   as prepare writes them
    <out>/summary.json                                     prepare's summary, test split only
    <out>/bins.csv                                         index,id,bin,overlap,gap,neighbour
    <out>/touching.json                                    the bins' definitions and the arguments
    <out>/raw/                                             the RRSIS-D raw layout it was prepared from

``diffris report-touching`` (``diffris.studies.touching_report``) reports IoU per bin.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.data import scenes
from diffris.data.synthetic import RRSISD_CATEGORIES, rrsisd_expression
from diffris.errors import ConfigError
from diffris.fileio import atomic_folder

DATASET = "rrsisd"  # what the prepared folder declares: runs trained on RRSIS-D evaluate on it
SPLIT = "test"
BINS_FILE, INFO_FILE, RAW_DIR = "bins.csv", "touching.json", "raw"
BINS_COLUMNS = ("index", "id", "bin", "overlap", "gap", "neighbour")
TOUCH_GAP = 1.5  # px: 8-adjacent pixel centres
MIN_VISIBLE = 0.5  # share of the neighbour not under the target
DISTRACTORS = 2
STEP = 0.5  # px between the neighbour positions tried along a direction
TRIES = 200


@dataclass(frozen=True)
class Bin:
    """A relation of neighbour to target: ranges of overlap (fraction of the target) and of gap
    (as a fraction of the image side, or in pixels when ``gap_px``)."""

    name: str
    overlap: tuple[float, float]
    gap: tuple[float, float] = (0.0, 0.0)
    gap_px: bool = False

    def gap_range(self, size: int) -> tuple[float, float]:
        return self.gap if self.gap_px else (self.gap[0] * size, self.gap[1] * size)

    def holds(self, overlap: float, gap: float, size: int) -> bool:
        low, high = self.gap_range(size)
        return self.overlap[0] <= overlap <= self.overlap[1] and low <= gap <= high


BINS = (
    Bin("apart", (0.0, 0.0), (0.045, 0.08)),
    Bin("touching", (0.0, 0.0), (1.0, TOUCH_GAP), gap_px=True),
    Bin("overlap-10", (0.05, 0.15)),
    Bin("overlap-25", (0.20, 0.30)),
    Bin("overlap-40", (0.35, 0.45)),
)


@dataclass
class TouchingScene:
    image: np.ndarray  # uint8 [S, S, 3]
    target: scenes.SceneObject
    neighbour: scenes.SceneObject  # its full shape, partly under the target when they overlap
    objects: list[scenes.SceneObject]  # target, neighbour, distractors
    bin: Bin
    overlap: float
    gap: float
    expression: str


# --- geometry -----------------------------------------------------------------------------


def overlap_of(target: np.ndarray, other: np.ndarray) -> float:
    """The share of ``target``'s pixels that ``other`` covers."""
    return float((target & other).sum() / target.sum())


def gap_between(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest distance between a pixel of ``a`` and one of ``b`` (0 when they share one)."""
    if (a & b).any():
        return 0.0
    pa, pb = np.argwhere(_outline(a)), np.argwhere(_outline(b))
    return float(np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1).min()))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it (the nearest pixels lie among them)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


# --- scenes -------------------------------------------------------------------------------


def touching_scene(rng: np.random.Generator, size: int, bin: Bin) -> TouchingScene:
    """One scene whose neighbour lies in ``bin`` relative to the target."""
    kinds = list(scenes.OBJECT_KINDS)
    for _ in range(TRIES):
        target_kind = scenes.OBJECT_KINDS[kinds[rng.integers(len(kinds))]]
        target = scenes.place(rng, size, target_kind, [], region=(0.25, 0.25, 0.75, 0.75))
        others = [k for k in kinds if k != target_kind.name]
        neighbour_kind = scenes.OBJECT_KINDS[others[rng.integers(len(others))]]
        neighbour = None if target is None else _place_neighbour(rng, size, target, neighbour_kind, bin)
        if neighbour is not None:
            break
    else:
        raise RuntimeError(f"no scene with a neighbour in bin {bin.name!r} after {TRIES} tries")
    objects = [target, neighbour]
    apart = BINS[0].gap_range(size)[0]
    for _ in range(3 * DISTRACTORS):
        if len(objects) == 2 + DISTRACTORS:
            break
        obj = scenes.place(rng, size, scenes.OBJECT_KINDS[others[rng.integers(len(others))]], objects)
        if obj is not None and gap_between(obj.mask, target.mask) >= apart:
            objects.append(obj)
    img = scenes.ground(rng, size)
    for obj in [*objects[2:], neighbour, target]:  # the target last: on top
        scenes.paint(img, obj, rng)
    expression = rrsisd_expression(rng, target, objects, "category")
    overlap, gap = overlap_of(target.mask, neighbour.mask), gap_between(target.mask, neighbour.mask)
    return TouchingScene(scenes.finish(img), target, neighbour, objects, bin, overlap, gap, expression)


def _place_neighbour(
    rng: np.random.Generator, size: int, target: scenes.SceneObject, kind: scenes.Kind, bin: Bin
) -> scenes.SceneObject | None:
    """A ``kind`` object along a random direction from the target, at a distance (drawn among
    those that qualify) that puts it in ``bin``; None when no distance does."""
    r = rng.uniform(*kind.size) * size
    colours = [c for c in kind.colours if c[0] != target.colour] or kind.colours
    word = colours[rng.integers(len(colours))][0]
    angle, direction = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    tx, ty = target.centre[0] * size, target.centre[1] * size
    reach = target.radius * np.sqrt(2) + r * np.sqrt(2) + bin.gap_range(size)[1] + 2
    start = 0.0  # coarse steps first, to the last distance at which the overlap exceeds the bin's
    for d in np.arange(0.0, reach, 4 * STEP):
        mask = scenes.shape_mask(kind.shape, size, tx + d * np.cos(direction), ty + d * np.sin(direction), r, angle)
        if overlap_of(target.mask, mask) <= bin.overlap[1]:
            break
        start = d
    fits = []
    for d in np.arange(start, reach, STEP):
        cx, cy = tx + d * np.cos(direction), ty + d * np.sin(direction)
        if not (r + 1 <= cx <= size - r - 1 and r + 1 <= cy <= size - r - 1):
            continue
        mask = scenes.shape_mask(kind.shape, size, cx, cy, r, angle)
        overlap = overlap_of(target.mask, mask)
        if overlap > bin.overlap[1] or not mask.any():
            continue
        if (mask & ~target.mask).sum() < MIN_VISIBLE * mask.sum():
            continue
        gap = gap_between(target.mask, mask) if overlap == 0 else 0.0
        if bin.holds(overlap, gap, size):
            fits.append(scenes.SceneObject(kind, word, mask, (cx / size, cy / size), r))
        elif overlap == 0 and gap > bin.gap_range(size)[1]:
            break
    return fits[rng.integers(len(fits))] if fits else None


def bin_of(index: int) -> Bin:
    return BINS[index % len(BINS)]


def generate_scenes(per_bin: int, size: int, seed: int):
    """``per_bin`` scenes per bin, sample i in ``bin_of(i)``, each from ``default_rng([seed, i])``."""
    for i in range(per_bin * len(BINS)):
        yield touching_scene(np.random.default_rng([seed, i]), size, bin_of(i))


# --- the raw layout and the prepared split -------------------------------------------------


def write_raw(out: Path, per_bin: int, size: int, seed: int) -> list[dict]:
    """The scenes in RRSIS-D's raw layout under ``out`` (all in the test split, ids 1..n, no
    quirks); returns one bins.csv record per sample."""
    from PIL import Image
    from pycocotools import mask as coco_mask

    image_dir = out / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True)
    (out / "rrsisd").mkdir()
    refs, images, annotations, bins = [], [], [], []
    for i, scene in enumerate(generate_scenes(per_bin, size, seed)):
        image_id, file_name = i + 1, "%05d.jpg" % (i + 1)
        category_id = RRSISD_CATEGORIES.index(scene.target.kind.name.replace(" ", ""))
        Image.fromarray(scene.image).save(image_dir / file_name, quality=95)
        rle = coco_mask.encode(np.asfortranarray(scene.target.mask.astype(np.uint8)))
        images.append({"file_name": file_name, "height": size, "width": size, "id": image_id})
        annotations.append(
            {
                "bbox": scene.target.bbox,
                "categories_id": category_id,
                "id": image_id,
                "image_id": image_id,
                "segmentation": [{"size": [size, size], "counts": rle["counts"].decode()}],
                "area": scene.target.area,
            }
        )
        sentence = {"tokens": scene.expression.split(), "raw": scene.expression, "sent": scene.expression, "sent_id": image_id}
        refs.append(
            {
                "ref_id": image_id, "ann_id": image_id, "image_id": image_id, "split": SPLIT,
                "file_name": file_name, "category_id": category_id, "sent_ids": [image_id], "sentences": [sentence],
            }
        )  # fmt: skip
        bins.append(
            {
                "id": str(image_id),
                "bin": scene.bin.name,
                "overlap": f"{scene.overlap:.4f}",
                "gap": f"{scene.gap:.4f}",
                "neighbour": scene.neighbour.kind.name,
            }
        )
    categories = [{"name": name, "id": k} for k, name in enumerate(RRSISD_CATEGORIES)]
    (out / "rrsisd" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    with open(out / "rrsisd" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=4)
    return bins


def make_touching(out: Path, image_size: int, raw_image_size: int, per_bin: int, seed: int) -> dict:
    """Generate, then prepare with ``diffris.data.prepare``, into ``out`` (atomically); returns
    the summary."""
    from diffris.data.prepare import check_image_size, prepare_split
    from diffris.data.readers import read_raw
    check_image_size(image_size)
    if per_bin < 1:
        raise ConfigError(f"--per-bin: {per_bin} is not a positive count")
    if raw_image_size < image_size:
        raise ConfigError(f"--raw-image-size: {raw_image_size} is below --image-size {image_size}")
    summary = {"dataset": DATASET, "image_size": image_size, "splits": {}}

    def write(tmp: Path) -> None:
        bins = write_raw(tmp / RAW_DIR, per_bin, raw_image_size, seed)
        rows = read_raw(DATASET, tmp / RAW_DIR)
        if [row.sample_id for row in rows] != [b["id"] for b in bins]:
            raise RuntimeError("the RRSIS-D reader returned the samples in another order than written")
        summary["splits"][SPLIT] = prepare_split(rows, tmp / SPLIT, image_size, f"{DATASET}-touching/{SPLIT}")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (tmp / BINS_FILE).write_text(bins_csv(bins))
        info = {
            "study": "touching",
            "per_bin": per_bin,
            "seed": seed,
            "image_size": image_size,
            "raw_image_size": raw_image_size,
            "bins": [
                {"name": b.name, "overlap": list(b.overlap), "gap_px": [round(g, 4) for g in b.gap_range(raw_image_size)]}
                for b in BINS
            ],
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    atomic_folder(out, write, "make-touching")
    return summary


def bins_csv(records: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=BINS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({"index": i, **record} for i, record in enumerate(records))
    return text.getvalue()


# --- command line -------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    make = sub.add_parser(
        "make-touching",
        help="study: an RRSIS-D-style test split where a neighbour touches or overlaps the target, prepared",
        description="Scenes like the rrsisd twin's with a second object apart from, touching or overlapping "
        "the target by a controlled share; written in RRSIS-D's raw layout and prepared (declared rrsisd, "
        "split test), with bins.csv giving each sample's relation.",
    )
    make.add_argument("--out", required=True, type=Path, help="the prepared folder to write")
    make.add_argument("--image-size", required=True, type=int, help="network side (as `diffris prepare`)")
    make.add_argument("--raw-image-size", required=True, type=int, help="side of the generated images")
    make.add_argument("--per-bin", required=True, type=int, help="samples per bin")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(handler=run_make)


def run_make(args: argparse.Namespace) -> int:
    summary = make_touching(args.out, args.image_size, args.raw_image_size, args.per_bin, args.seed)
    print(f"{args.out}: {summary['splits'][SPLIT]['samples']} test samples, {args.per_bin} per bin "
          f"({', '.join(b.name for b in BINS)}), bins in {args.out / BINS_FILE}")  # fmt: skip
    return 0
