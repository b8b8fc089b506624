"""An unpinned Hub backbone (sd-1-1) fetched at a branch, offline, from a fake local Hugging Face
cache: the branch is resolved once to a commit, which backbone.json records and the command
prints as the params.yaml line that pins it. No network is ever used."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from diffris.config import load_params
from diffris.models.backbone import FrozenBackbone
from diffris.models.weights import write_tiny_backbone

from conftest import run_cli

REPO_ID = "CompVis/stable-diffusion-v1-1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """``models--CompVis--stable-diffusion-v1-1`` with ``refs/main`` -> COMMIT and a tiny diffusers
    layout (plus a file fetch-weights must leave out) under ``snapshots/COMMIT``."""
    root = tmp_path_factory.mktemp("hf")
    generated = write_tiny_backbone("tiny-random", load_params()["backbones"]["tiny-random"], root / "generated")
    repo = root / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    for component in ("unet", "vae", "text_encoder", "tokenizer"):
        shutil.copytree(generated / component, snapshot / component)
    (snapshot / "v1-1.ckpt").write_text("not needed")
    return root / "hub"


def fetch(cache, out, *extra: str):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return run_cli("fetch-weights", "--backbone", "sd-1-1", "--out", out, *extra, check=False, env=env)


def test_a_branch_is_resolved_to_a_commit_recorded_and_printed_as_a_pin(hub_cache, tmp_path):
    proc = fetch(hub_cache, tmp_path / "sd-1-1", "--revision", "main")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "sd-1-1" / "backbone.json").read_text())
    assert info["revision"] == COMMIT and info["requested_revision"] == "main"
    assert info["source"] == "hub" and info["repo_id"] == REPO_ID
    assert "v1-1.ckpt" not in info["files"] and "unet/diffusion_pytorch_model.safetensors" in info["files"]
    assert f"  sd-1-1: {{repo_id: {REPO_ID}, revision: {COMMIT}}}" in proc.stdout.splitlines()
    backbone = FrozenBackbone.from_folder(tmp_path / "sd-1-1", expected_name="sd-1-1")
    assert backbone.revision == COMMIT  # what checkpoints and run configs record
    assert backbone.hub == {"repo_id": REPO_ID, "revision": COMMIT, "requested_revision": "main"}  # evaluation JSON


def test_a_bad_branch_is_one_line_naming_it(hub_cache, tmp_path):
    proc = fetch(hub_cache, tmp_path / "sd-1-1", "--revision", "no-such-branch")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{REPO_ID}: cannot resolve revision 'no-such-branch' in the local Hugging Face cache" in proc.stderr
    assert not (tmp_path / "sd-1-1").exists()


def test_no_revision_is_refused_in_one_line_that_says_how_to_resolve_it(hub_cache, tmp_path):
    proc = fetch(hub_cache, tmp_path / "sd-1-1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no pinned revision for CompVis/stable-diffusion-v1-1" in proc.stderr
    assert "`diffris fetch-weights --backbone sd-1-1 --revision main --out DIR`" in proc.stderr
