"""Pretraining the tiny backbones (diffris pretrain-backbone): the loss falls, the checkpoints load
through the standard path, the stage is deterministic. CPU, a few seconds (the `ci` run: 8 images)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffris.cli import main as cli_main
from diffris.config import load_params
from diffris.data.captions import captioned_scenes, describe_objects
from diffris.data.scenes import OBJECT_KINDS, SceneObject
from diffris.errors import ConfigError
from diffris.models import build_model, config_from_params
from diffris.models.architecture import tiny_architecture
from diffris.models.backbone import FrozenBackbone
from diffris.models.weights import copy_pretrained_backbone, read_info
from diffris.pretraining.pretrain import (
    LatentData,
    tokenize,
    clip_tokenizer,
    denoising_loss,
    embed_captions,
    noise_scheduler,
    pretrain,
    pretrain_run,
    train_unet,
)

from conftest import run_cli

RUN = "ci"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / RUN
    run_cli("pretrain-backbone", "--run", RUN, "--out", out)
    return out


def tree_sha256(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_denoising_loss_falls_over_a_short_pretraining(params):
    """30 UNet steps on one fixed latent: the run's loss (v-prediction, half the timesteps at high
    noise) at fixed noise and timesteps falls well below that of the random initialisation."""
    run = pretrain_run(params, RUN)
    unet_budget = replace(run.spec.unet, lr_schedule="constant")  # 30 steps: no decay
    run = replace(run, spec=replace(run.spec, images=16, unet=unet_budget), checkpoints={"x": 30})
    torch.manual_seed(run.tiny.seed)
    unet, _, text_encoder = tiny_architecture(run.tiny).instantiate()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator).repeat(16, 1, 1, 1)  # one image: its x0 can be learnt
    ids = tokenize(clip_tokenizer(run.tiny.max_length), ["a red vehicle"] * 16 + [""], 32)
    text = embed_captions(text_encoder, clip_tokenizer(run.tiny.max_length), ["a red vehicle"] * 16 + [""], 32)
    data = LatentData(latents, torch.zeros_like(latents), 1.0, ids[:-1], ids[-1:])

    def fixed_loss() -> float:
        with torch.no_grad():
            scheduler = noise_scheduler(run.spec.unet.prediction_type)
            return float(denoising_loss(unet, scheduler, latents, text[:-1], torch.Generator().manual_seed(1)))

    before, log = fixed_loss(), []
    train_unet(unet, text_encoder, data, run, generator, log, lambda name: None)
    assert len(log) == 30 and fixed_loss() < 0.75 * before, (before, fixed_loss())


def test_checkpoints_load_through_the_standard_path(pretrained, params, tmp_path):
    summary = (pretrained / "summary.json").read_text()
    assert '"tiny-ci-early"' in summary and '"tiny-ci-late"' in summary
    assert (pretrained / "loss.csv").read_text().startswith("phase,step,loss\nvae,1,")
    run_cli("fetch-weights", "--backbone", "tiny-ci-late", "--out", tmp_path / "late", "--pretrained", pretrained)
    info = read_info(tmp_path / "late")
    assert info["source"] == "pretrained" and info["pretraining"]["unet_steps"] == 2
    early, late = FrozenBackbone.from_folder(pretrained / "tiny-ci-early"), FrozenBackbone.from_folder(tmp_path / "late")
    assert early.weights_sha256() != late.weights_sha256()  # the UNet trained on
    assert torch.equal(early.vae.encoder.conv_in.weight, late.vae.encoder.conv_in.weight)  # one shared VAE
    assert late.vae.config.scaling_factor != 0.18215  # 1 / std of this VAE's latents
    config = config_from_params(params, "full", scale="ci")
    assert config.backbone == "tiny-ci-late"
    model = build_model(config, tmp_path / "late")
    ids, mask = model.tokenize(["a white airplane"])
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64), ids, mask).shape[-2:] == (64, 64)


def test_fetch_weights_refuses_a_checkpoint_of_another_run(pretrained, tmp_path, capsys):
    assert cli_main(["fetch-weights", "--backbone", "tiny-ci-late", "--out", str(tmp_path / "x")]) != 0
    assert "pass --pretrained DIR (the output of `diffris pretrain-backbone --run ci`)" in capsys.readouterr().err

    with pytest.raises(ConfigError, match="expected 'tiny-ci-late' of run 'tiny'"):
        copy_pretrained_backbone("tiny-ci-late", {"pretrained": "tiny"}, pretrained, tmp_path / "y")


def test_the_stage_is_deterministic_for_a_seed(pretrained, params, tmp_path):
    again = pretrain(pretrain_run(params, RUN), tmp_path / RUN)
    assert tree_sha256(again) == tree_sha256(pretrained)


def test_pretraining_config_errors_name_the_key(params):
    bad = copy.deepcopy(params)
    bad["pretraining"][RUN]["unet"]["checkpoints"]["tiny-sd-1-1"] = 3
    with pytest.raises(ConfigError, match=r"pretraining\.ci\.unet\.checkpoints\.tiny-sd-1-1: backbones\.tiny-sd-1-1 must be"):
        pretrain_run(bad, RUN)
    bad = copy.deepcopy(params)
    bad["pretraining"][RUN]["architecture"] = "sd-1-5"
    with pytest.raises(ConfigError, match=r"pretraining\.ci\.architecture: 'sd-1-5' is not a `tiny` entry"):
        pretrain_run(bad, RUN)
    with pytest.raises(ConfigError, match="pretraining run 'nope' is not one of"):
        pretrain_run(params, "nope")


def test_captions_describe_whole_scenes_from_their_own_stream():
    images, captions = captioned_scenes(6, seed=0, raw_size=64, size=32, urban_fraction=0.5)
    assert images.shape == (6, 32, 32, 3) and images.dtype.name == "uint8"
    again = captioned_scenes(6, seed=0, raw_size=64, size=32, urban_fraction=0.5)
    assert captions == again[1] and (images == again[0]).all()
    assert all(not c.startswith(("The ", "A ")) for c in captions)  # no referring expression's form
    mask = torch.zeros(8, 8, dtype=torch.bool).numpy()
    tank, plane = OBJECT_KINDS["storage tank"], OBJECT_KINDS["airplane"]
    objects = [SceneObject(tank, "grey", mask, (0.1, 0.1), 3.0), SceneObject(plane, "white", mask, (0.1, 0.9), 6.0),
               SceneObject(tank, "grey", mask, (0.9, 0.9), 2.0)]
    assert describe_objects(objects) == "a white airplane at the bottom left and two grey storage tanks"


def test_sample_backbone_writes_a_grid_and_the_loss_curve(pretrained, tmp_path):
    out = tmp_path / "grid.png"
    assert cli_main([
        "sample-backbone", "--backbone-dir", str(pretrained / "tiny-ci-early"), str(pretrained / "tiny-ci-late"),
        "--caption", "a red vehicle", "--steps", "2", "--out", str(out), "--loss-curve", str(pretrained / "loss.csv"),
    ]) == 0  # fmt: skip
    assert Image.open(out).size[0] > 200 and Image.open(tmp_path / "grid-loss.png").size[0] > 200


def test_the_paper_scale_random_control_has_sd1s_architecture(params):
    from diffris.pretraining.backbones import architecture_of
    from diffris.models.architecture import sd1_architecture

    with torch.device("meta"):
        control = architecture_of(params["backbones"]["sd-random"], "sd-random").instantiate()
        sd1 = sd1_architecture().instantiate()
    counts = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert counts(control[0]) == counts(sd1[0]) and counts(control[1]) == counts(sd1[1])  # UNet, VAE
    assert control[2].config.hidden_size == 768 and control[2].config.num_hidden_layers == 12
