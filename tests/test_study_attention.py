"""`diffris attention-maps`: the recorders only read (the model's logits stay the same bits and the
model is as it was afterwards), the recorded cross-attention is a distribution over the text
tokens, the study's CSV and figure are the same bytes on a rerun, and bad input is one line.

The runs here are untrained: a tiny random backbone and the experiment's seeded initial weights,
written as a finished run folder, on 6 synthetic RRSIS-D test samples at 64 px."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffris import cli
from diffris.training.checkpoint import save_weights
from diffris.config import load_params
from diffris.data.dataset import PreparedSplit
from diffris.data.prepare import prepare
from diffris.data.synthetic import generate
from diffris.features.datasets import model_inputs
from diffris.models.weights import write_tiny_backbone
from diffris.training.run_folder import CONFIG_FILE, MODEL_FILE, build_run_model, load_trained_model
from diffris.training.run_spec import run_spec_from_params
from diffris.studies.attention import CSV_HEADER, layers_at
from diffris.studies.attention_capture import (
    AttentionStudyError,
    CrossAttention,
    head_noun,
    record_assignments,
    record_cross_attention,
    token_groups,
)

DATASET, BACKBONE, TEST_SAMPLES = "rrsisd", "tiny-sd-1-5", 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Prepared data, a tiny random backbone and untrained runs of `full` and of the PCMRD
    baseline (no query tokens)."""
    root = tmp_path_factory.mktemp("attention")
    params = load_params()
    raw = generate(DATASET, root / "raw", {"train": 2, "val": 2, "test": TEST_SAMPLES}, 96, seed=7)
    data = root / "prepared"
    prepare(DATASET, raw, data, 64)
    backbone = write_tiny_backbone(BACKBONE, params["backbones"]["tiny-random"], root / BACKBONE)
    runs = {name: write_untrained_run(params, name, data, backbone, root / "runs" / name)
            for name in ("full", "pcmrd-baseline")}  # fmt: skip
    return {"data": data, "backbone": backbone, **runs}


def write_untrained_run(params: dict, experiment: str, data: Path, backbone: Path, out: Path) -> Path:
    spec = run_spec_from_params(params, "mini", experiment, DATASET, data, backbone)
    torch.manual_seed(0)
    model = build_run_model(spec.model, backbone)
    out.mkdir(parents=True)
    (out / CONFIG_FILE).write_text(json.dumps(spec.to_json(model.backbone_info())))
    info = {"experiment": experiment, "dataset": DATASET, "selected": "last", "epoch": 0, "global_step": 0}
    save_weights(out / MODEL_FILE, model.trainable_state_dict(), model.backbone_info(), info)
    return out


@pytest.fixture(scope="module")
def model_and_batch(tiny):
    model, _, _ = load_trained_model(tiny["full"], tiny["backbone"])
    model.eval()
    split = PreparedSplit(tiny["data"], "test")
    batch = torch.utils.data.default_collate([split[i] for i in range(3)])
    return model, model_inputs(model, batch, torch.device("cpu"))


def hook_counts(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_recorded_cross_attention_is_a_distribution_over_the_text_tokens(model_and_batch):
    model, inputs = model_and_batch
    with record_cross_attention(model.backbone.unet) as records, torch.no_grad():
        model(**inputs)
    assert records, "no cross-attention layer recorded"
    for record in records:
        batch, pixels, tokens = record.probs.shape
        assert (batch, tokens) == (3, model.config.text_max_length)
        assert abs(record.probs.sum(axis=-1) - 1.0).max() < 1e-5
        assert record.probs.min() >= 0.0


def test_recorders_leave_the_logits_bit_identical_and_the_model_as_it_was(model_and_batch):
    model, inputs = model_and_batch
    unet = model.backbone.unet
    processors, hooks = dict(unet.attn_processors), hook_counts(model)
    with torch.no_grad():
        before = model(**inputs)
        with record_assignments(model) as stages, record_cross_attention(unet) as attention:
            recorded = model(**inputs)
        after = model(**inputs)
    assert len(stages) == 3 and attention
    assert torch.equal(before, recorded) and torch.equal(before, after)
    assert hook_counts(model) == hooks
    assert all(unet.attn_processors[name] is processor for name, processor in processors.items())


def test_words_and_head_noun_come_back_from_the_clip_tokens(model_and_batch):
    model, _ = model_and_batch
    ids, _ = model.tokenize(["The storage tank on the top"])
    groups = token_groups(model.backbone.tokenizer, ids[0].tolist())
    assert [w.text for w in groups.words] == ["the", "storage", "tank", "on", "the", "top"]
    assert groups.start == (0,) and groups.end_padding[0] == 7 and groups.end_padding[-1] == ids.shape[1] - 1
    assert groups.words[groups.head].text == "tank"
    assert head_noun(["a", "black", "vehicle"]) == 2
    assert head_noun(["on", "the", "left", ",", "a", "car"]) == 5


def test_an_attention_stride_the_unet_lacks_is_refused():
    records = [CrossAttention("a", np.zeros((1, 64, 4))), CrossAttention("b", np.zeros((1, 16, 4)))]
    assert layers_at(records, 64, None)[0] == 8 and [r.layer for r in layers_at(records, 64, 16)[1]] == ["b"]
    with pytest.raises(AttentionStudyError, match=r"--attention-stride 3: .* strides \[8, 16\] only"):
        layers_at(records, 64, 3)


def attention_maps(run: Path, tiny: dict, out: Path, *extra) -> int:
    args = ["attention-maps", "--run", run, "--split", "test", "--data", tiny["data"],
            "--backbone-dir", tiny["backbone"], "--samples", 2, "--figure", out / "maps.png",
            "--out", out / "maps.csv", "--batch-size", 4, *extra]  # fmt: skip
    return cli.main([str(a) for a in args])


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_command_writes_the_same_csv_and_figure_on_a_rerun(tiny, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert attention_maps(tiny["full"], tiny, first) == 0
    assert attention_maps(tiny["full"], tiny, second) == 0
    for name in ("maps.csv", "maps.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    rows = read_rows(first / "maps.csv")
    assert tuple(rows[0]) == CSV_HEADER
    where = {(r["part"], r["where"]) for r in rows}
    assert {("assignment", "stage1"), ("assignment", "stage2"), ("assignment", "stage3")} <= where
    ratios = [r for r in rows if r["measure"] == "in_mask_ratio:head_noun"]
    assert len(ratios) == 1 and ratios[0]["where"] == "stride8"
    for row in rows:
        assert int(row["n"]) <= TEST_SAMPLES
        for key in ("mean", "ci_low", "ci_high"):
            assert len(row[key].split(".")[-1]) == 4, row
            assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])


def test_a_model_without_query_tokens_says_so(tiny, tmp_path):
    assert attention_maps(tiny["pcmrd-baseline"], tiny, tmp_path) == 0
    rows = read_rows(tmp_path / "maps.csv")
    assignment = [r for r in rows if r["part"] == "assignment"]
    assert len(assignment) == 1 and "no PCMRD query tokens" in assignment[0]["note"]
    assert any(r["part"] == "cross_attention" and r["n"] == str(TEST_SAMPLES) for r in rows)
    assert (tmp_path / "maps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "case, extra, words",
    [
        ("no run", {"run": "missing"}, "config.json: missing"),
        ("no samples", ["--samples", 0], "--samples 0"),
        ("not a png", {"figure": "maps.jpg"}, "expected a .png"),
        ("foreign csv", {"foreign": True}, "not a CSV of `diffris attention-maps`"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, case, extra, words):
    run = tmp_path / "missing" if isinstance(extra, dict) and extra.get("run") else tiny["full"]
    args = ["attention-maps", "--run", run, "--split", "test", "--data", tiny["data"],
            "--backbone-dir", tiny["backbone"], "--figure", tmp_path / "maps.png",
            "--out", tmp_path / "maps.csv"]  # fmt: skip
    if isinstance(extra, dict) and "figure" in extra:
        args[args.index("--figure") + 1] = tmp_path / extra["figure"]
    if isinstance(extra, dict) and extra.get("foreign"):
        (tmp_path / "maps.csv").write_text("somebody's,table\n")
    if isinstance(extra, list):
        args += extra
    assert cli.main([str(a) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffris attention-maps: error: ") and words in lines[0], lines
    assert not (tmp_path / "maps.png").exists()
