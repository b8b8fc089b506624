"""The DiffRIS model and its ablation variants on tiny generated backbones (CPU, seconds)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch

from diffris.cli import main as cli_main
from diffris.config import load_params
from diffris.errors import ConfigError, FetchError
from diffris.models import build_model, config_from_params
from diffris.models.backbone import FrozenBackbone, state_dict_sha256
from diffris.models.weights import fetch_hub_backbone, select_hub_files, write_tiny_backbone
from diffris.models.cp_adapter import CPAdapter
from diffris.models.decoders.deformable import MultiScaleDeformableAttention
from diffris.models.decoders.rotated_conv import rotation_resampling
from diffris.models.pcmrd import OAQIL, AssignmentMonitor, assignment_stats, gumbel_assign

from conftest import run_cli

SIZE = 64
EXPRESSIONS = ["the large white airplane on the left", "storage tank near the top right corner"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine spinning OpenMP
    workers make them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params()


def stand_in(params: dict, name: str) -> dict:
    """A random-weight stand-in for a pretrained tiny backbone (tests/test_pretrain.py covers the
    real checkpoints): tiny-random's sizes, one seed per name."""
    seeds = {"tiny-sd-1-1": 11, "tiny-sd-1-2": 12, "tiny-sd-1-4": 14, "tiny-sd-1-5": 15}
    return {"tiny": {**params["backbones"]["tiny-random"]["tiny"], "seed": seeds[name]}}


@pytest.fixture(scope="session")
def backbones(tmp_path_factory, params) -> dict[str, Path]:
    """Tiny backbones under the mini names, generated once (tiny-random through the CLI, as the
    pipeline does)."""
    root = tmp_path_factory.mktemp("backbones")
    run_cli("fetch-weights", "--backbone", "tiny-random", "--out", root / "tiny-random")
    dirs = {"tiny-random": root / "tiny-random"}
    for name in ("tiny-sd-1-1", "tiny-sd-1-2", "tiny-sd-1-4", "tiny-sd-1-5"):
        dirs[name] = write_tiny_backbone(name, stand_in(params, name), root / name)
    return dirs


def build(params: dict, backbones: dict[str, Path], experiment: str, seed: int = 0):
    config = config_from_params(params, experiment, scale="mini")
    torch.manual_seed(seed)
    return build_model(config, backbones[config.backbone])


def batch(model, size: int = SIZE) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 3, size, size, generator=generator) * 2 - 1
    masks = torch.rand(2, size, size, generator=generator) > 0.7
    input_ids, attention_mask = model.tokenize(EXPRESSIONS)
    return pixels, input_ids, attention_mask, masks


def frozen_hash(model) -> str:
    b = model.backbone
    return state_dict_sha256({"unet": b.unet, "vae": b.vae, "text_encoder": b.text_encoder})


# --- configuration ------------------------------------------------------------------------


def test_experiments_resolve_to_the_table_rows(params):
    configs = {name: config_from_params(params, name, scale="mini") for name in params["experiments"]}
    assert len(configs) == 14 + 12  # the tables' experiments, then the studies' (docs/studies.md)
    assert [configs[f"sd-1-{v}"].backbone for v in (1, 2, 4)] == ["tiny-sd-1-1", "tiny-sd-1-2", "tiny-sd-1-4"]
    assert config_from_params(params, "sd-1-4", scale="paper").backbone == "sd-1-4"
    assert configs["random"].backbone == "tiny-random"
    assert config_from_params(params, "random", scale="paper").backbone == "sd-random"
    cp = lambda c: (c.global_context, c.object_aware, c.domain_adjust)  # noqa: E731
    rows = [cp(configs[n].cp_adapter) for n in ("cp-none", "cp-global", "cp-global-object", "full")]
    assert rows == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    assert [configs[n].decoder for n in ("dec-lmp", "dec-oad", "dec-camd", "full")] == ["lmp", "oad", "camd", "pcmrd"]
    pc = lambda c: (c.multi_scale, c.query_tokens, c.hard_assign)  # noqa: E731
    rows = [pc(configs[n].pcmrd) for n in ("pcmrd-baseline", "pcmrd-multiscale", "pcmrd-queries", "full")]
    assert rows == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    paper = config_from_params(params, "full", scale="paper").loss
    assert paper.class_weights == (0.9, 1.1) and paper.dice_weight == 0  # the paper's loss
    assert configs["full"].loss.dice_weight == 1.0  # mini adds Dice (docs/training.md)


def test_unknown_override_key_is_named(params):
    bad = copy.deepcopy(params)
    bad["experiments"]["cp-none"] = {"cp_adapter": {"global_contxt": False}}
    with pytest.raises(ConfigError, match=r"experiments\.cp-none\.cp_adapter\.global_contxt: unknown key"):
        config_from_params(bad, "cp-none")
    with pytest.raises(ConfigError, match=r"experiments\.nope: no such experiment \(has: full, "):
        config_from_params(params, "nope")


def test_inconsistent_switches_are_refused(params):
    bad = copy.deepcopy(params)
    bad["experiments"]["x"] = {"pcmrd": {"query_tokens": False}}
    with pytest.raises(ConfigError, match="hard_assign needs pcmrd.query_tokens"):
        config_from_params(bad, "x")


# --- backbones and tokenizer --------------------------------------------------------------


def test_tiny_generator_is_deterministic(tmp_path, params, backbones):
    again = write_tiny_backbone("tiny-sd-1-5", stand_in(params, "tiny-sd-1-5"), tmp_path / "again")
    for f in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json"):
        digest = lambda root: hashlib.sha256((root / f).read_bytes()).hexdigest()  # noqa: E731
        assert digest(again) == digest(backbones["tiny-sd-1-5"])


def test_tokenizer_handles_any_english_text(params, backbones):
    model = build(params, backbones, "full")
    tokenizer = model.backbone.tokenizer
    text = "The café's 3 storage tanks (north-east) — near a zebra crossing ☃"
    ids, mask = model.tokenize([text, "ship"])
    assert ids.shape == mask.shape == (2, 32)
    assert tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True).startswith("the café")
    assert ids[1, 0] == tokenizer.bos_token_id and ids[1, mask[1].sum() - 1] == tokenizer.eos_token_id
    long_ids, long_mask = model.tokenize(["the ship " * 40])
    assert long_mask.all() and long_ids[0, -1] == tokenizer.eos_token_id  # truncation keeps the end token


def test_hub_file_selection_prefers_full_precision_safetensors():
    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "safety_checker/model.safetensors",
    ]
    assert select_hub_files(files) == [
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
    ]
    with pytest.raises(FetchError, match="text_encoder/model.safetensors"):
        select_hub_files([f for f in files if not f.startswith("text_encoder/model")])


def test_unpinned_hub_backbone_is_refused_before_any_download(tmp_path, params):
    with pytest.raises(ConfigError, match="no pinned revision"):
        fetch_hub_backbone("sd-1-1", params["backbones"]["sd-1-1"], tmp_path / "sd")
    assert not (tmp_path / "sd").exists()


def test_backbone_folder_must_match_the_config(params, backbones):
    config = config_from_params(params, "sd-1-1", scale="mini")
    with pytest.raises(ConfigError, match="holds backbone 'tiny-sd-1-5', expected 'tiny-sd-1-1'"):
        build_model(config, backbones["tiny-sd-1-5"])


# --- every variant ------------------------------------------------------------------------

VARIANTS = [
    "full",
    "cp-none",
    "cp-global",
    "cp-global-object",
    "dec-lmp",
    "dec-oad",
    "dec-camd",
    "pcmrd-baseline",
    "pcmrd-multiscale",
    "pcmrd-queries",
    "sd-1-1",
    "sd-1-2",
    "sd-1-4",
]


@pytest.mark.parametrize("experiment", VARIANTS)
def test_variant_trains_and_keeps_the_backbone_frozen(params, backbones, experiment):
    model = build(params, backbones, experiment)
    model.train()
    pixels, input_ids, attention_mask, masks = batch(model)
    before = frozen_hash(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    logits = model(pixels, input_ids, attention_mask)
    assert logits.shape == (2, 2, SIZE, SIZE)
    loss = model.loss(logits, masks)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is None for p in model.backbone.parameters())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None for p in trainable.values()), [
        n for n, p in trainable.items() if p.grad is None
    ]
    optimizer.step()
    assert frozen_hash(model) == before
    assert not model.backbone.training and model.decoder.training


def test_cp_adapter_learns_through_the_unet(params, backbones):
    """LMP never reads the text, so the adapter's only gradient path is the UNet's cross-attention."""
    model = build(params, backbones, "dec-lmp")
    pixels, input_ids, attention_mask, masks = batch(model)
    model.loss(model(pixels, input_ids, attention_mask), masks).backward()
    grads = [p.grad for p in model.cp_adapter.parameters()]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_feature_pyramid_strides(params, backbones):
    model = build(params, backbones, "full")
    for size in (64, 96):
        pixels, input_ids, attention_mask, _ = batch(model, size)
        with torch.no_grad():
            _, taps = model.encode(pixels, input_ids, attention_mask)
            feats = model.neck(taps, (size, size))
        assert [t.shape[1] for t in taps] == list(model.backbone.tap_channels) == [32, 64, 128, 128]
        assert [tuple(v.shape[-2:]) for v in feats] == [(size // s, size // s) for s in (4, 8, 16, 32)]
        assert all(v.shape[1] == model.config.feature_dim for v in feats)


def test_trainable_state_dict_round_trip(params, backbones):
    model = build(params, backbones, "full", seed=0).eval()
    state = model.trainable_state_dict()
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(k.startswith("backbone.") for k in state)
    other = build(params, backbones, "full", seed=1).eval()
    pixels, input_ids, attention_mask, _ = batch(model)
    with torch.no_grad():
        assert not torch.equal(model(pixels, input_ids, attention_mask), other(pixels, input_ids, attention_mask))
        other.load_trainable_state_dict(state)
        assert torch.equal(model(pixels, input_ids, attention_mask), other(pixels, input_ids, attention_mask))
    with pytest.raises(ConfigError, match="missing"):
        other.load_trainable_state_dict({})


def test_backbone_info_names_the_weights(params, backbones):
    model = build(params, backbones, "full")
    info = model.backbone_info()
    assert info["name"] == "tiny-sd-1-5" and info["revision"] == "generated (seed 15)"
    again = FrozenBackbone.from_folder(backbones["tiny-sd-1-5"])
    assert info["weights_sha256"] == again.weights_sha256() != build(params, backbones, "sd-1-1").backbone_info()[
        "weights_sha256"
    ]


def test_describe_model_prints_counts_per_component(capsys):
    assert cli_main(["describe-model", "--experiment", "cp-none", "--scale", "mini"]) == 0
    out = capsys.readouterr().out
    assert "backbone tiny-sd-1-5, decoder pcmrd" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert rows["cp_adapter"] == ["0", "0"] and rows["backbone.unet"][0] == "0"


# --- components ---------------------------------------------------------------------------


def test_domain_adjustment_starts_as_a_no_op(params):
    config = config_from_params(params, "full", scale="mini").cp_adapter
    torch.manual_seed(0)
    with_adjust = CPAdapter(config, 32)
    without = CPAdapter(dataclasses.replace(config, domain_adjust=False), 32)
    without.load_state_dict(with_adjust.state_dict(), strict=False)
    words, mask = torch.randn(2, 7, 32), torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    assert torch.equal(with_adjust(words, mask), without(words, mask))
    h = torch.randn(2, 7, 32)
    assert torch.equal(with_adjust.adjustment(h), h)


def test_no_adapter_is_the_identity(params):
    config = config_from_params(params, "cp-none", scale="mini").cp_adapter
    adapter = CPAdapter(config, 32)
    words = torch.randn(2, 5, 32)
    assert adapter(words, torch.ones(2, 5, dtype=torch.bool)) is words and not list(adapter.parameters())


def test_hard_assignment_is_one_hot_forward_with_gradient_to_similarities():
    torch.manual_seed(0)
    similarity = (torch.rand(2, 5, 30) * 2 - 1).requires_grad_(True)
    tau = torch.tensor(0.1)
    assignment = gumbel_assign(similarity, tau, hard=True, training=True)
    assert set(assignment.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(assignment.detach().sum(dim=1), torch.ones(2, 30))
    (assignment * torch.randn(2, 5, 30)).sum().backward()
    assert similarity.grad is not None and similarity.grad.abs().sum() > 0
    evaluation = gumbel_assign(similarity.detach(), tau, hard=True, training=False)
    assert torch.equal(evaluation.argmax(dim=1), similarity.argmax(dim=1))
    assert torch.equal(evaluation, gumbel_assign(similarity.detach(), tau, hard=True, training=False))
    soft = gumbel_assign(similarity.detach(), tau, hard=False, training=True)
    assert torch.allclose(soft.sum(dim=1), torch.ones(2, 30)) and soft.max() < 1


def test_eq17_noise_forms_differ_only_in_how_tau_scales_the_noise():
    """paper: softmax((S + G)/tau); logits: softmax(S/tau + G); the same G for the same seed."""
    similarity, tau = torch.rand(2, 4, 50) * 2 - 1, torch.tensor(0.5)
    torch.manual_seed(3)
    paper = gumbel_assign(similarity, tau, hard=True, training=True, noise="paper").detach()
    torch.manual_seed(3)
    gumbel = -torch.empty_like(similarity).exponential_().log()
    assert torch.equal(paper.argmax(dim=1), (similarity + gumbel).argmax(dim=1))
    torch.manual_seed(3)
    logits = gumbel_assign(similarity, tau, hard=True, training=True, noise="logits").detach()
    assert torch.equal(logits.argmax(dim=1), (similarity / tau + gumbel).argmax(dim=1))
    assert not torch.equal(paper, logits)


def test_assignment_stats_on_a_hand_made_case():
    """Two images, 4 tokens, 4 pixels: image 0 sends every pixel to token 2, image 1 uses all four."""
    similarity = torch.full((2, 4, 4), -1.0)
    similarity[0, 2, :] = 1.0
    similarity[1, torch.arange(4), torch.arange(4)] = 1.0
    clean = one_hot_of(similarity)
    stats = assignment_stats(similarity, clean, torch.tensor(1e-3))
    assert stats["tokens_used"] == 2.5 and stats["agreement"] == 1.0
    assert stats["entropy"] < 1e-6  # a sharp softmax is one-hot
    flipped = clean.roll(1, dims=1)  # every pixel moved to another token
    assert assignment_stats(similarity, flipped, torch.tensor(1e-3))["agreement"] == 0.0
    flat = assignment_stats(torch.zeros(1, 4, 3), clean[:1, :, :3], torch.tensor(1.0))
    assert abs(flat["entropy"] - 1.0) < 1e-6 and flat["tau"] == 1.0


def one_hot_of(similarity: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(similarity.argmax(dim=1), similarity.shape[1]).transpose(1, 2).float()


@pytest.mark.parametrize("assign_norm", ["none", "layer", "centred"])
def test_monitor_averages_every_stage_over_forward_passes(params, assign_norm):
    config = config_from_params(params, "full", scale="mini").pcmrd
    config = dataclasses.replace(config, assign_norm=assign_norm)
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([OAQIL(config, text_dim=32, visual_dim=32) for _ in range(2)])
    monitor = AssignmentMonitor(layers)
    from diffris.models.layers import TextFeatures

    text = TextFeatures(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))
    queries = torch.randn(2, config.num_queries, config.query_dim)
    for _ in range(3):
        for layer in layers:
            layer(queries, text, torch.randn(2, 32, 4, 4))
        monitor.update()
    stats = monitor.read()
    assert sorted(stats) == ["stage1", "stage2"]
    for stage in stats.values():
        assert 1 <= stage["tokens_used"] <= config.num_queries and 0 <= stage["entropy"] <= 1
        assert 0 <= stage["agreement"] <= 1 and stage["tau"] == pytest.approx(config.tau_init, rel=1e-4)
    assert monitor.read() == {}  # read resets


def test_rotated_kernels():
    identity = rotation_resampling(torch.zeros(1))[0]
    assert torch.allclose(identity, torch.eye(9))
    quarter = rotation_resampling(torch.tensor([math.pi / 2]))[0]
    assert torch.allclose(quarter.sum(dim=1), torch.ones(9), atol=1e-6)  # a permutation of the taps
    assert torch.allclose(quarter @ quarter @ quarter @ quarter, torch.eye(9), atol=1e-5)
    assert quarter[4, 4] == 1  # the centre stays put


def test_deformable_attention_samples_at_the_reference_point():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=8, heads=2, levels=1, points=1)
    torch.nn.init.zeros_(attention.offsets.bias)
    torch.nn.init.eye_(attention.value.weight), torch.nn.init.zeros_(attention.value.bias)
    torch.nn.init.eye_(attention.out.weight), torch.nn.init.zeros_(attention.out.bias)
    value = torch.randn(1, 12, 8)  # a 3x4 map
    centres = torch.tensor([[(x + 0.5) / 4, (y + 0.5) / 3] for y in range(3) for x in range(4)])
    out = attention(torch.randn(1, 12, 8), centres, value, [(3, 4)])
    assert torch.allclose(out, value, atol=1e-6)
