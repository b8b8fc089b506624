"""measure-grounding: on a hand-made case, a UNet made blind to its text (cross-attention outputs
zeroed) shows no caption gap, no ranking and no feature shift, where the random backbone's text
moves both; the held-out scenes and their edits are what the measures assume. CPU, seconds."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from diffris.models.attention import cross_attention_layers
from diffris.models.backbone import FrozenBackbone
from diffris.pretraining.grounding import EDITS, held_out_scenes

from conftest import run_cli


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> tuple[Path, Path]:
    """tiny-random, and a copy whose UNet's cross-attention adds nothing (text-blind)."""
    root = tmp_path_factory.mktemp("grounding")
    run_cli("fetch-weights", "--backbone", "tiny-random", "--out", root / "random")
    shutil.copytree(root / "random", root / "blind")
    backbone = FrozenBackbone.from_folder(root / "blind")
    for layer in cross_attention_layers(backbone.unet).values():
        torch.nn.init.zeros_(layer.to_out[0].weight)
        torch.nn.init.zeros_(layer.to_out[0].bias)
    backbone.unet.save_pretrained(root / "blind" / "unet")
    return root / "random", root / "blind"


def test_held_out_scenes_name_one_object_and_edit_one_attribute():
    scenes = held_out_scenes(6, seed=0, raw_size=64, size=64)
    again = held_out_scenes(6, seed=0, raw_size=64, size=64)
    for scene, same in zip(scenes, again):
        assert scene.caption == same.caption and (scene.image == same.image).all()
        assert scene.mask.shape == (64, 64) and scene.mask.any()
        assert scene.caption.startswith(scene.prefix) and scene.prefix.endswith(scene.head)
        assert scene.expression.startswith("the ") and scene.head in scene.expression
        assert set(scene.edits) == set(EDITS)
        for kind, edited in scene.edits.items():
            assert edited != scene.caption, kind
            assert len(edited.split()) - len(scene.caption.split()) in (-2, -1, 0, 1, 2), kind  # one phrase changed


def test_a_text_blind_unet_has_no_grounding_and_the_random_one_reads_its_text(backbones, tmp_path):
    out = tmp_path / "grounding.csv"
    proc = run_cli(
        "measure-grounding", "--backbone-dir", *backbones, "--scenes", "6", "--draws", "1",
        "--raw-image-size", "64", "--out", out,
    )  # fmt: skip
    assert "2 backbone(s), 6 scenes" in proc.stdout
    random, blind = csv.DictReader(out.open())
    assert random["backbone"] == blind["backbone"] == "tiny-random"
    gaps = [k for k in blind if k.startswith("gap_")]
    assert len(gaps) == 8
    assert all(float(blind[k]) == 0.0 for k in gaps)
    assert float(blind["feature_shift_t1"]) == 0.0 == float(blind["feature_shift_t250_noised"])
    assert float(blind["ranking"]) == 0.0  # ties: the true caption never wins
    assert float(random["feature_shift_t1"]) > 1.0 and any(float(random[k]) != 0.0 for k in gaps)
    assert 0.0 <= float(random["attention_iou"]) <= 1.0


def test_bad_arguments_are_refused_in_one_line(backbones, tmp_path):
    proc = run_cli("measure-grounding", "--backbone-dir", backbones[0], "--scenes", "1", "--out", tmp_path / "g.csv", check=False)
    assert proc.returncode != 0 and "--scenes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("measure-grounding", "--backbone-dir", tmp_path / "none", "--out", tmp_path / "g.csv", check=False)
    assert proc.returncode != 0 and "none" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.csv").exists()
