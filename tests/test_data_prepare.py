"""Generator -> reader -> prepare round trip, and the counted repairs of prepare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffris.data import read_raw
from diffris.data.dataset import PreparedSplit
from diffris.data.prepare import prepare, resize_pair

from conftest import SMALL_SPLITS, run_cli


@pytest.mark.parametrize("dataset", ["rrsisd", "refsegrs", "risbench"])
def test_fetch_prepare_round_trip_through_the_cli(dataset, tmp_path):
    params = tmp_path / "params.yaml"
    settings = yaml.safe_load(open("params.yaml"))
    settings["scales"]["mini"]["synthetic"]["splits"] = {"train": 6, "val": 3, "test": 3}
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    run_cli("fetch", "--dataset", dataset, "--source", "synthetic", "--out", tmp_path / "raw", "--params", params)
    marker = json.loads((tmp_path / "raw" / "FETCHED.json").read_text())
    assert marker["splits"] == {"train": 6, "val": 3, "test": 3}
    run_cli("prepare", "--dataset", dataset, "--raw", tmp_path / "raw", "--out", tmp_path / "prep", "--image-size", 32)

    samples = read_raw(dataset, tmp_path / "raw")
    summary = json.loads((tmp_path / "prep" / "summary.json").read_text())
    assert {k: v["samples"] for k, v in summary["splits"].items()} == {"train": 6, "val": 3, "test": 3}
    test = PreparedSplit(tmp_path / "prep", "test")
    raw_test = [s for s in samples if s.split == "test"]
    assert [r["sample_id"] for r in test.records] == [s.sample_id for s in raw_test]
    item = test[1]
    assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
    assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    assert item["mask"].dtype == torch.bool and item["expression"] == raw_test[1].expression
    expected_image, expected_mask, _ = resize_pair(raw_test[1].load_image(), raw_test[1].load_mask(), 32)
    assert (test.images[1] == expected_image).all() and (test.masks[1] == expected_mask).all()


def test_synthetic_fetch_is_deterministic(tmp_path):
    from diffris.data.synthetic import generate

    for name in ("a", "b"):
        generate("risbench", tmp_path / name, SMALL_SPLITS, 64, seed=3)
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def test_expressions_are_needed_to_find_the_target():
    """Every scene holds other candidates; where the target's category repeats, the expression
    names the attribute (side or size) that tells the two apart."""
    from diffris.data import scenes
    from diffris.data.synthetic import rrsisd_expression

    rng = np.random.default_rng(0)
    hows = set()
    for _ in range(40):
        _, target, objects, how = scenes.object_scene(rng, 96, list(scenes.OBJECT_KINDS))
        hows.add(how)
        assert len(objects) >= 2 and target in objects
        same_kind = [o for o in objects if o.kind is target.kind]
        text = rrsisd_expression(rng, target, objects, how)
        if how == "category":
            assert same_kind == [target]
        else:
            twin = scenes.twin_of(target, objects)
            word = scenes.relative_side(target, twin) if how == "position" else ("large" if target.radius > twin.radius else "small")
            assert len(same_kind) == 2 and word in text.split()
    assert hows == {"category", "position", "size"}


def test_prepare_resizes_mismatched_masks_and_counts_them(raw_copy, tmp_path):
    root = raw_copy("rrsisd")
    target = next(s for s in read_raw("rrsisd", root) if s.split == "val")
    image = target.load_image()
    Image.fromarray(np.pad(image, ((0, 2), (0, 0), (0, 0)), mode="edge")).save(target.image_path, quality=95)
    summary = prepare("rrsisd", root, tmp_path / "prep", 32)
    assert target.sample_id in summary["splits"]["val"]["repaired_ids"]["mask_resized_to_image"]
    assert summary["splits"]["val"]["samples"] == SMALL_SPLITS["val"]
    record = PreparedSplit(tmp_path / "prep", "val").records
    assert any(r["orig_height"] == image.shape[0] + 2 for r in record)


def test_prepare_counts_binarised_masks(raw_copy, tmp_path):
    root = raw_copy("refsegrs")
    sample = next(s for s in read_raw("refsegrs", root) if s.split == "train")
    mask = sample.load_mask().astype(np.uint8) * 200
    mask[0, 0] = 30  # a third grey level
    Image.fromarray(mask).save(root / "masks" / f"{sample.sample_id}.tif")
    summary = prepare("refsegrs", root, tmp_path / "prep", 32)
    binarised = summary["splits"]["train"]["repaired_ids"]["mask_binarised"]
    assert sample.sample_id in binarised and summary["splits"]["train"]["mask_binarised"] == len(binarised)


def test_resize_pair_is_bilinear_for_images_and_nearest_for_masks():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 2:] = 200
    mask = np.zeros((4, 4), bool)
    mask[:, 2:] = True
    out_image, out_mask, mismatched = resize_pair(image, mask, 8)
    assert set(np.unique(out_mask)) == {0, 1} and not mismatched
    assert len(np.unique(out_image[..., 0])) > 2  # interpolated values between 0 and 200
