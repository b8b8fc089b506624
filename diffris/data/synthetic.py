"""Synthetic twins: small datasets written in exactly each benchmark's raw layout.

Same folder and file names, formats and encodings as the real data (RRSIS-D: pickle + COCO RLE
JSON + JPEG; RefSegRS: TIFF + phrase files; RISBench: PNG + phrase files), including the quirks
the readers must cope with, so that ``read_raw`` is the only way in. Deterministic for a seed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from diffris.data import scenes
from diffris.data.readers import SPLITS

# RRSIS-D's category table, ids 0..19 in the order of the real instances.json.
RRSISD_CATEGORIES = [
    "Expressway-Service-area", "Expressway-toll-station", "airplane", "airport", "baseballfield",
    "basketballcourt", "bridge", "chimney", "dam", "golffield", "groundtrackfield", "harbor",
    "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
]  # fmt: skip


def generate(dataset: str, out: str | Path, splits: dict[str, int], image_size: int, seed: int) -> Path:
    """Write ``splits[split]`` samples per split of ``dataset``'s layout under ``out``."""
    writers = {"rrsisd": write_rrsisd, "refsegrs": write_refsegrs, "risbench": write_risbench}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers[dataset](out, splits, image_size, seed)
    return out


def _rng(seed: int, dataset: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, ["rrsisd", "refsegrs", "risbench"].index(dataset), SPLITS.index(split)])


def _progress(total: int, dataset: str):
    return tqdm(total=total, desc=f"synthetic {dataset}", unit="sample", leave=False)


# --------------------------------------------------------------------------- RRSIS-D


def rrsisd_expression(rng: np.random.Generator, target: scenes.SceneObject, others, how: str) -> str:
    """RRSIS-D style: 'The storage tank on the left', ASCII letters and spaces, starts with A/The."""
    name = target.kind.name
    if how == "position":
        return f"The {name} on the {scenes.relative_side(target, scenes.twin_of(target, others))}"
    if how == "size":
        twin = scenes.twin_of(target, others)
        return f"The {'large' if target.radius > twin.radius else 'small'} {name}"
    if rng.random() < 0.5:
        return f"A {target.colour} {name}"
    return f"The {name} in the {scenes.position_word(target.centre)}"


def write_rrsisd(out: Path, splits: dict[str, int], size: int, seed: int) -> None:
    from pycocotools import mask as coco_mask

    image_dir = out / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    (out / "images" / "rrsisd" / "ann_split").mkdir(exist_ok=True)
    (out / "rrsisd").mkdir(exist_ok=True)
    total = sum(splits.values())
    ids = np.random.default_rng(seed).choice(np.arange(1, 23464), size=total, replace=False)
    kinds = list(scenes.OBJECT_KINDS)
    refs, images, annotations = [], [], []
    bar = _progress(total, "rrsisd")
    ids_iter = iter(sorted(int(i) for i in ids))
    for split in SPLITS:  # refs are stored in blocks: all train, then val, then test
        rng = _rng(seed, "rrsisd", split)
        for _ in range(splits[split]):
            image_id = next(ids_iter)
            img, target, objects, how = scenes.object_scene(rng, size, kinds)
            sentence = rrsisd_expression(rng, target, objects, how)
            category_id = RRSISD_CATEGORIES.index(target.kind.name.replace(" ", ""))
            file_name = "%05d.jpg" % image_id
            saved = img
            if rng.random() < 0.03:  # quirk: a few JPEGs are not square, their RLE is
                extra = int(rng.choice([2, -13]))
                saved = np.pad(img, ((0, extra), (0, 0), (0, 0)), mode="edge") if extra > 0 else img[:extra]
            Image.fromarray(saved).save(image_dir / file_name, quality=95)
            rle = coco_mask.encode(np.asfortranarray(target.mask.astype(np.uint8)))
            images.append({"file_name": file_name, "height": size, "width": size, "id": image_id})
            annotations.append(
                {
                    "bbox": target.bbox,  # xyxy, as the real file
                    "categories_id": category_id,  # sic: the real file's key
                    "id": image_id,
                    "image_id": image_id,
                    "segmentation": [{"size": [size, size], "counts": rle["counts"].decode()}],
                    "area": int(rng.integers(1, 3 * size * size)),  # meaningless, as in the real file
                }
            )
            refs.append(
                {
                    "ref_id": image_id,
                    "ann_id": image_id,
                    "image_id": image_id,
                    "split": split,
                    "file_name": file_name,
                    "category_id": category_id,
                    "sent_ids": [image_id],
                    "sentences": [
                        {"tokens": sentence.split(), "raw": sentence, "sent": sentence, "sent_id": image_id}
                    ],
                }
            )
            bar.update()
    bar.close()
    categories = [{"name": name, "id": k} for k, name in enumerate(RRSISD_CATEGORIES)]
    with open(out / "rrsisd" / "instances.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    with open(out / "rrsisd" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=4)


# --------------------------------------------------------------------------- RefSegRS

REFSEGRS_PHRASES = {
    "road": ["road", "road surface"],
    "car": ["car", "vehicle", "car driving on the road", "light-duty vehicle driving on the road"],
    "building": ["building", "building along the road"],
    "tree": ["tree", "tree along the road"],
    "low vegetation": ["low vegetation", "low vegetation near the building"],
}


def write_refsegrs(out: Path, splits: dict[str, int], size: int, seed: int) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    total = sum(splits.values())
    ids = [int(i) for i in np.random.default_rng(seed).permutation(total)]  # per-expression ids, unsorted
    next_id = iter(ids)
    bar = _progress(total, "refsegrs")
    for split in SPLITS:
        rng = _rng(seed, "refsegrs", split)
        lines: list[str] = []
        while len(lines) < splits[split]:
            img, masks = scenes.urban_tile(rng, size)
            for category, phrase in refsegrs_phrases(rng, sorted(masks))[: splits[split] - len(lines)]:
                sample_id = next(next_id)
                Image.fromarray(img).save(out / "images" / f"{sample_id}.tif")
                Image.fromarray(refsegrs_mask(rng, masks[category])).save(out / "masks" / f"{sample_id}.tif")
                lines.append(f"{sample_id} {phrase}\n")
                bar.update()
        with open(out / f"output_phrase_{split}.txt", "w") as f:
            f.writelines(lines)  # no trailing blank line: the real files have none
    bar.close()


def refsegrs_phrases(rng: np.random.Generator, categories: list[str]) -> list[tuple[str, str]]:
    """(category, phrase) pairs for one tile, one id each: one or two categories, and sometimes a
    synonym of the first (another id with the same mask, as val ids 4497, 1489 and 25)."""
    pairs = []
    for category in rng.permutation(categories)[: rng.integers(1, 3)]:
        words = REFSEGRS_PHRASES[str(category)]
        pairs.append((str(category), words[rng.integers(len(words))]))
    first, phrase = pairs[0]
    synonyms = [w for w in REFSEGRS_PHRASES[first] if w != phrase]
    if synonyms and rng.random() < 0.3:
        pairs.insert(1, (first, synonyms[rng.integers(len(synonyms))]))
    return pairs


def refsegrs_mask(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The mask as the file stores it: 0/255, or (a third of the time) with grey edges whose
    levels lie above 50 inside the object and at or below 50 outside, so > 50 gives ``mask``."""
    stored = mask.astype(np.uint8) * 255
    if rng.random() < 1 / 3:
        inner = mask & ~_erode(mask)
        outer = _erode(~mask) ^ ~mask
        stored[inner] = rng.integers(51, 255, int(inner.sum()))
        stored[outer] = rng.integers(1, 51, int(outer.sum()))
    return stored


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion; the image border counts as inside."""
    padded = np.pad(mask, 1, mode="edge")
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


# --------------------------------------------------------------------------- RISBench

RISBENCH_KINDS = list(scenes.OBJECT_KINDS)


def risbench_sentence(rng: np.random.Generator, target: scenes.SceneObject, others, how: str) -> str:
    """RISBench style: long, punctuated, model-written sentences (commas, hyphens, apostrophes)
    with the odd spacing glitch."""
    name, colour = target.kind.name, target.colour
    where = scenes.position_word(target.centre)
    if how == "position":
        where = f"{scenes.relative_side(target, scenes.twin_of(target, others))}-most side"
    if how == "size":
        twin = scenes.twin_of(target, others)
        size = "larger" if target.radius > twin.radius else "smaller"
        text = f"The {colour} {name} located at the {where} of the image is the {size} of the two {name}s"
    else:
        neighbour = min(
            (o for o in others if o is not target),
            key=lambda o: np.hypot(o.centre[0] - target.centre[0], o.centre[1] - target.centre[1]),
            default=None,
        )
        if how == "category" and rng.random() < 0.4:
            text = f"The {colour} {name} in the image's {where.replace(' ', '-')} area"
        else:
            text = f"The {colour} {name} located at the {where} of the image"
        if rng.random() < 0.4:
            text += f" features a well-defined {colour} surface"
        if neighbour is not None and rng.random() < 0.6:
            text += f", and lies near a {neighbour.colour} {neighbour.kind.name}"
    text += "."
    if rng.random() < 0.15:  # quirk: odd spacing kept as the dataset stores it
        text = text.replace("The ", "The  ", 1).replace(".", " .")
    return text


def risbench_referents(rng: np.random.Generator, target: scenes.SceneObject, objects, how: str) -> list[tuple]:
    """(object, how) of the referents of one source image: the target, and sometimes another
    object whose category is alone in the scene (RISBench stores one file per referent)."""
    referents = [(target, how)]
    kinds = [o.kind.name for o in objects]
    alone = [o for o in objects if o is not target and kinds.count(o.kind.name) == 1]
    if alone and rng.random() < 0.3:
        referents.append((alone[rng.integers(len(alone))], "category"))
    return referents


def write_risbench(out: Path, splits: dict[str, int], size: int, seed: int) -> None:
    base = out / "RISBench_dataset"
    (base / "img_rgb").mkdir(parents=True, exist_ok=True)
    (base / "mask").mkdir(exist_ok=True)
    bar = _progress(sum(splits.values()), "risbench")
    for split in SPLITS:
        rng = _rng(seed, "risbench", split)
        lines: list[str] = []
        image_index = 0
        while len(lines) < splits[split]:
            img, target, objects, how = scenes.object_scene(rng, size, RISBENCH_KINDS)
            gap = int(rng.integers(0, 2))  # quirk: gaps in object indices
            for obj, obj_how in risbench_referents(rng, target, objects, how)[: splits[split] - len(lines)]:
                sentence = risbench_sentence(rng, obj, objects, obj_how)
                name = f"{split}_{image_index}_{objects.index(obj) + gap}.png"
                Image.fromarray(img).save(base / "img_rgb" / name)  # one image file per triplet
                Image.fromarray(obj.mask.astype(np.uint8) * 255).save(base / "mask" / name)
                lines.append(f"{name} {sentence}\n")
                bar.update()
            image_index += 1
        with open(base / f"output_phrase_{split}.txt", "w") as f:
            f.writelines(lines)
    bar.close()
