"""The readers on synthetic twins and on hand-made cases for each quirk of the real layouts."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from diffris.data import read_raw
from diffris.errors import DataError

from conftest import SMALL_SPLITS


@pytest.mark.parametrize("dataset", ["rrsisd", "refsegrs", "risbench"])
def test_reader_finds_every_sample_with_image_and_mask(synthetic_raw_cache, dataset):
    samples = read_raw(dataset, synthetic_raw_cache[dataset])
    counts = {split: sum(s.split == split for s in samples) for split in SMALL_SPLITS}
    assert counts == SMALL_SPLITS
    assert len({s.sample_id for s in samples}) == len(samples)
    for s in samples[:4]:
        image, mask = s.load_image(), s.load_mask()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == bool and mask.ndim == 2 and mask.any()
        assert s.expression == s.expression.strip() and s.expression


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        read_raw("refcoco", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_raw("rrsisd", tmp_path / "nowhere")


# --------------------------------------------------------------------------- RRSIS-D quirks


def _rrsisd_files(root):
    refs_path, inst_path = root / "rrsisd" / "refs(unc).p", root / "rrsisd" / "instances.json"
    return refs_path, pickle.loads(refs_path.read_bytes()), inst_path, json.loads(inst_path.read_text())


def test_rrsisd_categories_id_key_xyxy_box_and_meaningless_area(synthetic_raw_cache):
    _, refs, _, inst = _rrsisd_files(synthetic_raw_cache["rrsisd"])
    ann = inst["annotations"][0]
    assert "categories_id" in ann and "category_id" not in ann
    samples = {s.sample_id: s for s in read_raw("rrsisd", synthetic_raw_cache["rrsisd"])}
    mask = samples[str(ann["id"])].load_mask()
    ys, xs = np.nonzero(mask)
    assert [xs.min(), ys.min(), xs.max(), ys.max()] == ann["bbox"]  # x1, y1, x2, y2
    assert samples[str(refs[0]["ref_id"])].category == inst["categories"][refs[0]["category_id"]]["name"]
    assert [r["split"] for r in refs] == sorted((r["split"] for r in refs), key=["train", "val", "test"].index)


def test_rrsisd_uncompressed_rle_and_polygon_segmentations(raw_copy):
    root = raw_copy("rrsisd")
    refs_path, refs, inst_path, inst = _rrsisd_files(root)
    h = w = 96
    square = np.zeros((h, w), np.uint8)
    square[10:30, 20:50] = 1
    counts, value, run = [], 0, 0
    for pixel in square.flatten(order="F"):  # column-major runs, starting with zeros
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    inst["annotations"][0]["segmentation"] = [{"size": [h, w], "counts": counts}]
    inst["annotations"][1]["segmentation"] = [[20.0, 10.0, 50.0, 10.0, 50.0, 30.0, 20.0, 30.0]]
    inst_path.write_text(json.dumps(inst))
    samples = {s.sample_id: s for s in read_raw("rrsisd", root)}
    assert (samples[str(inst["annotations"][0]["id"])].load_mask() == square.astype(bool)).all()
    polygon = samples[str(inst["annotations"][1]["id"])].load_mask()
    assert polygon[15:25, 25:45].all() and not polygon[50:].any()


def test_rrsisd_mask_counts_pixels_covered_exactly_once(raw_copy):
    root = raw_copy("rrsisd")
    _, _, inst_path, inst = _rrsisd_files(root)
    a = np.zeros((96, 96), np.uint8)
    a[0:20, 0:20] = 1
    b = np.zeros((96, 96), np.uint8)
    b[10:30, 10:30] = 1
    rles = [coco_mask.encode(np.asfortranarray(m)) for m in (a, b)]
    inst["annotations"][0]["segmentation"] = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    inst_path.write_text(json.dumps(inst))
    sample = next(s for s in read_raw("rrsisd", root) if s.sample_id == str(inst["annotations"][0]["id"]))
    mask = sample.load_mask()
    assert mask[5, 5] and mask[25, 25] and not mask[15, 15]


def test_rrsisd_image_not_square_is_read_at_its_own_size(raw_copy):
    root = raw_copy("rrsisd")
    _, refs, _, _ = _rrsisd_files(root)
    path = root / "images" / "rrsisd" / "JPEGImages" / refs[0]["file_name"]
    Image.new("RGB", (96, 98)).save(path)
    sample = next(s for s in read_raw("rrsisd", root) if s.sample_id == str(refs[0]["ref_id"]))
    assert sample.load_image().shape == (98, 96, 3)
    assert sample.load_mask().shape == (96, 96)


# --------------------------------------------------------------------------- RefSegRS quirks


def test_refsegrs_unsorted_lines_trailing_newlines_and_repeated_tiles(raw_copy):
    root = raw_copy("refsegrs")
    phrase_file = root / "output_phrase_val.txt"
    lines = [line for line in phrase_file.read_text().splitlines() if line]
    first_id, phrase = lines[0].split(" ", 1)
    # the same tile and mask under a new id, with another phrase; then blank trailing lines
    new_id = "9999"
    for folder in ("images", "masks"):
        (root / folder / f"{new_id}.tif").write_bytes((root / folder / f"{first_id}.tif").read_bytes())
    phrase_file.write_text("\n".join([f"{new_id} vehicle", *lines]) + "\n\n\n")
    samples = [s for s in read_raw("refsegrs", root) if s.split == "val"]
    assert [s.sample_id for s in samples] == [new_id] + [line.split(" ", 1)[0] for line in lines]
    twin = {s.sample_id: s for s in samples}
    assert (twin[new_id].load_mask() == twin[first_id].load_mask()).all()
    assert twin[first_id].expression == phrase


def test_refsegrs_mask_threshold_is_above_50_and_grey_levels_are_reported(raw_copy):
    root = raw_copy("refsegrs")
    sample_id = (root / "output_phrase_train.txt").read_text().split(" ", 1)[0]
    grey = np.zeros((96, 96), np.uint8)
    grey[:, :30] = 50  # not foreground
    grey[:, 30:60] = 51
    grey[:, 60:] = 255
    Image.fromarray(grey).save(root / "masks" / f"{sample_id}.tif")
    sample = next(s for s in read_raw("refsegrs", root) if s.sample_id == sample_id)
    mask, repaired = sample.load_mask_checked()
    assert not mask[:, :30].any() and mask[:, 30:].all() and repaired


# --------------------------------------------------------------------------- RISBench quirks


def test_risbench_keeps_punctuation_and_inner_spacing(raw_copy):
    root = raw_copy("risbench")
    phrase_file = root / "RISBench_dataset" / "output_phrase_test.txt"
    lines = phrase_file.read_text().splitlines()
    name = lines[0].split(" ", 1)[0]
    odd = "The  small vehicle positioned at the top center of the image ."
    phrase_file.write_text("\n".join([f"{name} {odd}  ", *lines[1:]]) + "\n")
    sample = next(s for s in read_raw("risbench", root) if s.sample_id == name[:-4])
    assert sample.expression == odd
    assert sample.image_path.name == name and sample.split == "test"


def test_risbench_root_may_be_the_dataset_folder_itself(synthetic_raw_cache):
    outer = read_raw("risbench", synthetic_raw_cache["risbench"])
    inner = read_raw("risbench", synthetic_raw_cache["risbench"] / "RISBench_dataset")
    assert [s.sample_id for s in outer] == [s.sample_id for s in inner]
