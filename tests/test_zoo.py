"""The model zoo (diffris pack-zoo, fetch-weights from zoo/): the ci pretraining's checkpoints are
packed, fetched back through their sha256, refused when tampered with; the committed zoo matches
params.yaml. CPU, seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from diffris.config import REPO_ROOT, load_params
from diffris.fileio import sha256sum
from diffris.models.backbone import FrozenBackbone
from diffris.models.weights import read_info
from diffris.pipeline.jobs import pretrained_from, pretraining_runs, zoo_runs

from conftest import run_cli


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """The ci run's pretraining and its zoo folder."""
    root = tmp_path_factory.mktemp("zoo")
    run_cli("pretrain-backbone", "--run", "ci", "--out", root / "ci", env={"OMP_NUM_THREADS": "1"})
    proc = run_cli("pack-zoo", "--pretrained", root / "ci", "--out", root / "packed")
    assert "tiny-ci-late: {pretrained: ci, zoo: {file: zoo/tiny-ci-late.safetensors, sha256: " in proc.stdout
    return root / "ci", root / "packed"


def params_with_zoo(packed: Path, folder: Path) -> Path:
    """A params.yaml in ``folder`` whose tiny-ci-late is shipped from ``folder``/zoo/."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    manifest = json.loads((packed / "zoo.json").read_text())
    (folder / "zoo").mkdir(parents=True)
    shutil.copy(packed / "tiny-ci-late.safetensors", folder / "zoo")
    params["backbones"]["tiny-ci-late"] = {
        "pretrained": "ci",
        "zoo": {"file": "zoo/tiny-ci-late.safetensors", "sha256": manifest["files"]["tiny-ci-late"]["sha256"]},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder / "params.yaml"


def test_fetch_weights_takes_a_zoo_backbone_through_its_checksum(packed, tmp_path):
    pretrained, zoo = packed
    manifest = json.loads((zoo / "zoo.json").read_text())
    assert manifest["run"] == "ci" and set(manifest["files"]) == {"tiny-ci-early", "tiny-ci-late"}
    assert manifest["files"]["tiny-ci-late"]["sha256"] == sha256sum(zoo / "tiny-ci-late.safetensors")
    params = params_with_zoo(zoo, tmp_path / "repo")
    run_cli("fetch-weights", "--backbone", "tiny-ci-late", "--params", params, "--out", tmp_path / "late")
    info = read_info(tmp_path / "late")
    assert info["source"] == "zoo" and info["pretraining"]["unet_steps"] == 2
    fetched, original = FrozenBackbone.from_folder(tmp_path / "late"), FrozenBackbone.from_folder(pretrained / "tiny-ci-late")
    for component in ("unet", "vae", "text_encoder"):
        a, b = getattr(fetched, component).state_dict(), getattr(original, component).state_dict()
        assert a.keys() == b.keys()
        for key in a:  # float32 again, holding the float16 values of the trained weights
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key].half().to(b[key].dtype)), key
    assert fetched.vae.config.scaling_factor == original.vae.config.scaling_factor
    scheduler = json.loads((tmp_path / "late" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"


def test_a_tampered_zoo_file_is_refused_in_one_line(packed, tmp_path):
    params = params_with_zoo(packed[1], tmp_path / "repo")
    file = tmp_path / "repo" / "zoo" / "tiny-ci-late.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    file.write_bytes(bytes(data))
    proc = run_cli("fetch-weights", "--backbone", "tiny-ci-late", "--params", params, "--out", tmp_path / "x", check=False)
    assert proc.returncode != 0 and not (tmp_path / "x").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tiny-ci-late.safetensors: sha256" in lines[0] and "does not match backbones.tiny-ci-late" in lines[0]
    file.unlink()
    proc = run_cli("fetch-weights", "--backbone", "tiny-ci-late", "--params", params, "--out", tmp_path / "x", check=False)
    assert proc.returncode != 0 and "tiny-ci-late.safetensors: missing" in proc.stderr


def test_the_committed_zoo_is_what_params_pins():
    """Every zoo backbone's file is committed with the sha256 params.yaml pins, and the mini
    scale fetches it instead of pretraining."""
    params = load_params()
    shipped = [(name, e["zoo"]) for name, e in params["backbones"].items() if "zoo" in e]
    assert shipped and zoo_runs(params) == ["tiny"]
    manifest = json.loads((REPO_ROOT / "zoo" / "zoo.json").read_text())
    for name, zoo in shipped:
        assert sha256sum(REPO_ROOT / zoo["file"]) == zoo["sha256"] == manifest["files"][name]["sha256"], name
        assert pretrained_from(params, name) is None
    assert pretraining_runs(params, "mini") == []
    assert sum((REPO_ROOT / z["file"]).stat().st_size for _, z in shipped) <= 50e6
