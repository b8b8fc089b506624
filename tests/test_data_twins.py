"""The synthetic twins are read by a loader written to the published loaders' rules
(docs/interfaces.md) exactly as ``read_raw`` reads them, and
they hold the real files' quirks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from diffris.data import read_raw

from conftest import SMALL_SPLITS

SPLITS = ("train", "val", "test")


# --- an independent loader: the rules of refer.py/RMSIN, FIANet (RefSegRS) and FIANet2 (RISBench)


def published_rrsisd(root):
    """refer.py: refs(unc).p + instances.json; the mask is the decoded RLEs summed, == 1."""
    refs = pickle.load(open(os.path.join(root, "rrsisd", "refs(unc).p"), "rb"))
    instances = json.load(open(os.path.join(root, "rrsisd", "instances.json")))
    anns = {a["id"]: a for a in instances["annotations"]}
    for ref in refs:
        rle = anns[ref["ann_id"]]["segmentation"]
        rle = [{"size": r["size"], "counts": r["counts"].encode()} for r in rle]
        mask = coco_mask.decode(rle).sum(axis=2).astype(np.uint8) == 1
        image = os.path.join(root, "images", "rrsisd", "JPEGImages", ref["file_name"])
        yield ref["split"], str(ref["ref_id"]), ref["sentences"][0]["raw"], image, mask


def published_phrase_files(root, image_dir, mask_dir, suffix):
    """FIANet / FIANet2: split each line of output_phrase_<split>.txt on its first space; the
    mask is the grey file > 50. Blank lines are not skipped: the real files have none."""
    for split in SPLITS:
        for line in open(os.path.join(root, f"output_phrase_{split}.txt"), encoding="utf-8"):
            name, sentence = line.split(" ", 1)
            mask = np.asarray(Image.open(os.path.join(root, mask_dir, name + suffix))) > 50
            yield split, name.removesuffix(".png"), sentence.strip(), os.path.join(root, image_dir, name + suffix), mask


def published(dataset, root):
    if dataset == "rrsisd":
        return list(published_rrsisd(str(root)))
    if dataset == "refsegrs":
        return list(published_phrase_files(str(root), "images", "masks", ".tif"))
    return list(published_phrase_files(str(root / "RISBench_dataset"), "img_rgb", "mask", ""))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    from diffris.data.synthetic import generate

    root = tmp_path_factory.mktemp("twins")
    splits = {"train": 40, "val": 12, "test": 12}
    return splits, {ds: generate(ds, root / ds, splits, 64, seed=1) for ds in ("rrsisd", "refsegrs", "risbench")}


@pytest.mark.parametrize("dataset", ["rrsisd", "refsegrs", "risbench"])
def test_a_published_style_loader_reads_the_twin_sample_for_sample_like_read_raw(twins, dataset):
    splits, roots = twins
    ours, theirs = read_raw(dataset, roots[dataset]), published(dataset, roots[dataset])
    assert len(ours) == len(theirs) == sum(splits.values())
    assert Counter(s.split for s in ours) == Counter(splits)
    for sample, (split, sample_id, expression, image, mask) in zip(ours, theirs):
        assert (sample.split, sample.sample_id, sample.expression) == (split, sample_id, expression)
        assert str(sample.image_path) == image and (sample.load_mask() == mask).all()
        assert (sample.load_image() == np.asarray(Image.open(image).convert("RGB"))).all()


def test_phrase_files_end_without_a_blank_line(twins):
    _, roots = twins
    files = [*roots["refsegrs"].glob("output_phrase_*.txt"), *roots["risbench"].glob("*/output_phrase_*.txt")]
    for path in files:
        text = path.read_text()
        assert text.endswith("\n") and not text.endswith("\n\n") and "\n\n" not in text, path


def test_refsegrs_twin_has_same_mask_synonyms_and_grey_masks(twins):
    _, roots = twins
    samples = read_raw("refsegrs", roots["refsegrs"])
    by_mask = defaultdict(list)
    for s in samples:
        by_mask[hashlib.sha256(s.load_mask().tobytes() + s.load_image().tobytes()).hexdigest()].append(s)
    shared = [group for group in by_mask.values() if len(group) > 1]
    assert shared and all(len({s.expression for s in g}) == len(g) for g in shared)  # synonyms, one id each
    grey = [s for s in samples if s.load_mask_checked()[1]]
    assert grey, "no mask exercises the > 50 rule"
    levels = np.unique(np.asarray(Image.open(roots["refsegrs"] / "masks" / f"{grey[0].sample_id}.tif")))
    assert levels.min() == 0 and levels.max() == 255 and ((levels > 0) & (levels <= 50)).any() and ((levels > 50) & (levels < 255)).any()


def test_risbench_twin_has_several_referents_per_image_hyphens_and_apostrophes(twins):
    _, roots = twins
    samples = read_raw("risbench", roots["risbench"])
    by_image = defaultdict(list)
    for s in samples:
        by_image[s.sample_id.rsplit("_", 1)[0]].append(s)
    several = [group for group in by_image.values() if len(group) > 1]
    assert several
    a, b = several[0][:2]
    assert (a.load_image() == b.load_image()).all() and not (a.load_mask() == b.load_mask()).all()
    assert any("-" in s.expression for s in samples) and any("'" in s.expression for s in samples)


def test_readers_skip_blank_lines_the_published_loaders_would_trip_on(raw_copy):
    for dataset, phrase_dir in (("refsegrs", ""), ("risbench", "RISBench_dataset")):
        root = raw_copy(dataset)
        before = [(s.split, s.sample_id, s.expression) for s in read_raw(dataset, root)]
        for path in (root / phrase_dir).glob("output_phrase_*.txt"):
            lines = path.read_text().splitlines()
            path.write_text("\n" + "\n \n".join(lines) + "\n\n")
        assert [(s.split, s.sample_id, s.expression) for s in read_raw(dataset, root)] == before


def test_twins_hold_exactly_the_requested_samples(synthetic_raw_cache):
    for dataset, root in synthetic_raw_cache.items():
        assert Counter(s.split for s in read_raw(dataset, root)) == Counter(SMALL_SPLITS), dataset
