"""Feature caches: training and evaluation give the same results with and without them, and a
cache computed from other weights, data or sizes is refused (real tiny model, real CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from diffris.pipeline import dvc_stages, jobs
from diffris.config import load_params
from conftest import run_cli
from test_train import ENV, TRAIN_BUDGET, Assets, read_log, shared_assets, state_weights, without_timings

TEXT_LENGTH = 32  # the tiny model's text_max_length
SHORT_BUDGET = {"epochs": 1, "select": "last", "checkpoint_every_steps": 0}  # 6 steps, validated once


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return shared_assets(tmp_path_factory)


def cache_args(assets: Assets, out: Path, backbone: Path | None = None, *extra: str) -> list:
    # the micro-batch size as batch size: the VAE's CPU kernels depend on it (docs/benchmarks.md)
    return [
        "cache-features", "--data", assets.data, "--backbone-dir", backbone or assets.backbone,
        "--text-length", TEXT_LENGTH, "--batch-size", TRAIN_BUDGET["micro_batch_size"], "--out", out, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def cache(assets) -> Path:
    out = assets.root / "features"
    if not (out / "cache.json").exists():
        run_cli(*cache_args(assets, out, None, "--unet-taps", "--cpu-threads", "1"), env=ENV)
    return out


@pytest.fixture(scope="session")
def short_params(assets) -> Path:
    path = assets.root / "params-short.yaml"
    params = yaml.safe_load(assets.params.read_text())
    params["scales"]["mini"]["train"].update(SHORT_BUDGET)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train(assets: Assets, params: Path, name: str, experiment: str, *extra) -> Path:
    """A one-epoch run (trained once per session)."""
    out = assets.root / "runs" / name
    if not (out / "model.safetensors").exists():
        args = assets.train_args(out)
        args[args.index("--experiment") + 1] = experiment
        args[args.index("--params") + 1] = params
        run_cli(*args, *extra, env=ENV)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    weights_a, weights_b = state_weights(a), state_weights(b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    assert without_timings(read_log(a)) == without_timings(read_log(b))


def test_cache_records_what_it_holds(assets, cache):
    info = json.loads((cache / "cache.json").read_text())
    assert info["dtype"] == "float32" and info["image_size"] == 64
    assert info["latents"]["kind"] == "posterior mode, unscaled" and len(info["latents"]["vae_sha256"]) == 64
    assert info["text"]["text_length"] == TEXT_LENGTH
    assert info["unet_taps"]["timestep"] == 1 and info["unet_taps"]["latent_scaling"] is True
    assert {s: v["num_samples"] for s, v in info["splits"].items()} == {"train": 24, "val": 8, "test": 8}
    assert np.load(cache / "train" / "latents.npy").shape == (24, 4, 8, 8)
    assert np.load(cache / "train" / "text.npy").shape[:2] == (24, TEXT_LENGTH)
    assert [np.load(cache / "train" / f"tap{i}.npy").shape[-1] for i in range(4)] == [8, 4, 2, 1]


def test_training_with_the_cache_gives_bit_identical_weights(assets, short_params, cache):
    """Latents and text from the cache, the UNet run in each step (the CP-adapter is trainable);
    the validation at the epoch end reads the val split's cache too."""
    cached = train(assets, short_params, "full-cached", "full", "--features", cache)
    assert_same_run(cached, train(assets, short_params, "full", "full"))
    assert json.loads((cached / "config.json").read_text())["features"] == str(cache)


def test_cached_unet_taps_give_bit_identical_weights(assets, short_params, cache):
    """cp-none: the CP-adapter is off, so the UNet's input is frozen and its taps come from the cache."""
    cached = train(assets, short_params, "cp-none-cached", "cp-none", "--features", cache)
    assert_same_run(cached, train(assets, short_params, "cp-none", "cp-none"))


def test_evaluation_with_the_cache_writes_identical_files(assets, short_params, cache, tmp_path):
    """Plain and shuffled-expression metrics (one call computes both), JSON and per-sample CSV."""
    run = train(assets, short_params, "full", "full")
    plain, cached = tmp_path / "plain.json", tmp_path / "cached.json"
    common = ("evaluate", "--run", run, "--split", "test", "--shuffle-expressions")
    run_cli(*common, "--out", plain, env=ENV)
    run_cli(*common, "--out", cached, "--features", cache, env=ENV)
    assert cached.read_bytes() == plain.read_bytes()
    assert cached.with_suffix(".csv").read_bytes() == plain.with_suffix(".csv").read_bytes()


def altered_copy(source: Path, target: Path, component: str) -> Path:
    """A copy of the backbone with the same name and one weight of ``component`` changed."""
    shutil.copytree(source, target)
    weights_file = next((target / component).glob("*.safetensors"))
    weights = load_file(weights_file)
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1.0
    save_file(weights, weights_file)
    return target


def test_a_cache_of_another_vae_is_refused(assets, cache, tmp_path):
    altered = altered_copy(assets.backbone, tmp_path / "backbone", "vae")
    args = assets.train_args(tmp_path / "run", backbone=altered)
    result = run_cli(*args, "--features", cache, check=False, env=ENV)
    assert result.returncode == 2
    assert "latents.vae_sha256" in result.stderr and "stale" in result.stderr


def test_a_cache_of_other_data_is_refused(assets, short_params, cache, tmp_path):
    data = tmp_path / "prepared"
    shutil.copytree(assets.data, data)
    manifest = data / "test" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["expression"] = "the other building"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli(
        "evaluate", "--run", train(assets, short_params, "full", "full"), "--split", "test", "--out", tmp_path / "t.json",
        "--data", data, "--features", cache, check=False, env=ENV,
    )  # fmt: skip
    assert result.returncode == 2 and "splits.test.manifest_sha256" in result.stderr


def test_latents_are_reused_only_for_the_same_vae(assets, cache, tmp_path):
    same_vae = altered_copy(assets.backbone, tmp_path / "same-vae", "unet")
    reused = run_cli(*cache_args(assets, tmp_path / "a", same_vae, "--reuse-latents", cache), env=ENV)
    assert "reusing the latents" in reused.stdout
    assert json.loads((tmp_path / "a" / "cache.json").read_text())["latents"]["reused_from"] == "tiny-sd-1-5"
    assert (tmp_path / "a" / "train" / "latents.npy").read_bytes() == (cache / "train" / "latents.npy").read_bytes()

    other_vae = altered_copy(assets.backbone, tmp_path / "other-vae", "vae")
    computed = run_cli(*cache_args(assets, tmp_path / "b", other_vae, "--reuse-latents", cache), env=ENV)
    assert "differs in: VAE sha256" in computed.stdout
    assert json.loads((tmp_path / "b" / "cache.json").read_text())["latents"]["reused_from"] is None


def test_the_pipeline_caches_features_once_per_dataset_and_backbone():
    params = load_params()
    scale = params["scale"]
    caches = jobs.feature_caches(params, scale)
    assert len(caches) == len({(r.dataset, jobs.backbone_of(params, scale, r.experiment)) for r in jobs.runs(params)})
    taps = [c for c in caches if "--unet-taps" in jobs.feature_cache_options(params, scale, c)]
    cp_off = {
        (r.dataset, jobs.backbone_of(params, scale, r.experiment))
        for r in jobs.runs(params)
        if not jobs.config_from_params(params, r.experiment, scale).cp_adapter.enabled
    }
    assert {(c.dataset, c.backbone) for c in taps} == cp_off
    stages = dvc_stages.dvc_stages(params, scale)
    for run in jobs.runs(params):
        cache = jobs.feature_cache_of(params, scale, run.experiment, run.dataset)
        stage = stages[f"train-{run.experiment}-{run.dataset}-seed{params['seed']}"]
        assert f"--features {cache.folder(scale)}" in stage["cmd"] and cache.folder(scale) in stage["deps"]


# --- fast paths ---------------------------------------------------------------------------------


def test_attention_runs_through_pytorch_sdpa(assets):
    from diffris.models.backbone import FrozenBackbone

    backbone = FrozenBackbone.from_folder(assets.backbone)
    for network in (backbone.unet, backbone.vae):
        assert {type(p).__name__ for p in network.attn_processors.values()} == {"AttnProcessor2_0"}
    assert backbone.text_encoder.config._attn_implementation == "sdpa"


def tiny_model_gradients(channels_last: bool, checkpointing: bool) -> tuple[float, torch.Tensor]:
    from diffris.pretraining.backbones import architecture_of
    from diffris.models import config_from_params
    from diffris.models.backbone import FrozenBackbone
    from diffris.models.model import DiffRIS

    params = load_params()
    config = config_from_params(params, "full", "ci")
    torch.manual_seed(0)
    arch = architecture_of(params["backbones"]["tiny-random"], "tiny-random", params)
    model = DiffRIS(config, FrozenBackbone.from_architecture(arch, config.backbone)).train()
    model.backbone.use_fast_paths(channels_last, checkpointing, compile_unet=False)
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    input_ids, attention_mask = torch.randint(0, 50, (2, TEXT_LENGTH), generator=g), torch.ones(2, TEXT_LENGTH)
    loss = model.loss(model(pixels, input_ids, attention_mask), torch.rand(2, 64, 64, generator=g) < 0.1)
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_checkpointing_and_channels_last_keep_the_gradients():
    loss, grads = tiny_model_gradients(channels_last=False, checkpointing=False)
    checkpointed = tiny_model_gradients(channels_last=False, checkpointing=True)
    assert checkpointed[0] == loss and torch.equal(checkpointed[1], grads)  # recomputation is exact
    nhwc = tiny_model_gradients(channels_last=True, checkpointing=False)
    assert nhwc[0] == pytest.approx(loss, rel=1e-5)  # other convolution kernels: rounding only
    torch.testing.assert_close(nhwc[1], grads, rtol=1e-3, atol=1e-4)
