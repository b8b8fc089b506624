"""`diffris measure-cost`: parameters, FLOPs and memory accounting of each variant, counted on the
meta device (the same bytes on every machine), and latency in a separate, device-named file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from diffris.pretraining.backbones import architecture_of
from diffris.cli import main
from diffris.config import load_params
from diffris.models import config_from_params
from diffris.models.backbone import FrozenBackbone
from diffris.models.model import DiffRIS
from diffris.studies.cost import COLUMNS, TIMING_COLUMNS, measure_counts, resolve_target, write_csv

VARIANTS = ["cp-none", "dec-camd", "full"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ci_rows() -> dict[str, dict[str, str]]:
    params = load_params()
    rows = measure_counts(params, resolve_target(params, "ci", "scale"), VARIANTS)
    return {row["experiment"]: row for row in rows}


def test_parameter_counts_match_a_built_model(ci_rows):
    params = load_params()
    for experiment in ("cp-none", "full"):
        config = config_from_params(params, experiment, "ci")
        arch = architecture_of(params["backbones"][config.backbone], config.backbone, params)
        model = DiffRIS(config, FrozenBackbone.from_architecture(arch, config.backbone))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        row = ci_rows[experiment]
        assert (int(row["trainable_params"]), int(row["frozen_params"])) == (trainable, frozen)
        assert int(row["decoder_params"]) == sum(p.numel() for p in model.decoder.parameters())


def test_frozen_backbone_and_trainable_heads_split(ci_rows):
    none, full = ci_rows["cp-none"], ci_rows["full"]
    assert int(none["cp_adapter_params"]) == 0 < int(full["cp_adapter_params"])
    assert int(none["trainable_params"]) < int(full["trainable_params"])
    assert len({row["frozen_params"] for row in ci_rows.values()}) == 1  # one backbone for all variants
    for row in ci_rows.values():
        heads = sum(int(row[f"{head}_params"]) for head in ("cp_adapter", "neck", "decoder"))
        assert heads == int(row["trainable_params"])


def test_flops_and_memory_add_up(ci_rows):
    for row in ci_rows.values():
        parts = [float(row[f"{part}_gflops"]) for part in ("vae", "text", "unet", "heads")]
        assert all(value > 0 for value in parts)
        assert sum(parts) == pytest.approx(float(row["forward_gflops"]), abs=1e-5)
        assert float(row["train_step_gflops"]) > float(row["forward_gflops"])
        memory = [float(row[f"{part}_mib"]) for part in ("weights", "grads", "optimizer", "activations")]
        assert memory[2] == pytest.approx(2 * memory[1], abs=2e-3)
        assert sum(memory) == pytest.approx(float(row["train_memory_mib"]), abs=5e-3)
    # without the CP-adapter no gradient crosses the UNet, so its activations are not kept
    assert float(ci_rows["cp-none"]["activations_mib"]) < float(ci_rows["full"]["activations_mib"])


def test_results_file_is_deterministic_and_machine_free(tmp_path, capsys, ci_rows):
    out, again = tmp_path / "cost.csv", tmp_path / "again.csv"
    args = ["measure-cost", "--scale", "ci", "--experiments", "full,cp-none", "--out", str(out), "--no-timing"]  # fmt: skip
    assert main(args) == 0
    write_csv(again, COLUMNS, [ci_rows["full"], ci_rows["cp-none"]])  # the fixture's run, in the given order
    assert out.read_bytes() == again.read_bytes()
    assert tuple(read_rows(out)[0]) == COLUMNS
    assert not {"device", "device_kind", "threads", "torch"} & set(COLUMNS)
    assert not any(column.startswith("latency") or column.endswith("peak_mib") for column in COLUMNS)


def test_timings_name_the_device(tmp_path, capsys):
    out, timings, figure = tmp_path / "cost.csv", tmp_path / "timings.csv", tmp_path / "cost.png"
    args = ["measure-cost", "--scale", "ci", "--experiments", "cp-none", "--out", str(out), "--timings", str(timings),
            "--figure", str(figure), "--warmup", "0", "--repeats", "2", "--threads", "1", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    (row,) = read_rows(timings)
    assert tuple(row) == TIMING_COLUMNS
    assert row["device_kind"] == "cpu" and row["device"] and row["threads"] == "1"
    assert 0 < float(row["latency_ms_min"]) <= float(row["latency_ms_median"]) <= float(row["latency_ms_max"])
    assert row["train_peak_mib"] == ""  # on a CPU the accounting stands in for a measured peak
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_paper_architecture_costs_more_and_counts_sd1(tmp_path, capsys, ci_rows):
    out = tmp_path / "cost-paper.csv"
    args = ["measure-cost", "--scale", "ci", "--architecture", "paper", "--experiments", "cp-none",
            "--out", str(out), "--no-timing"]  # fmt: skip
    assert main(args) == 0
    (paper,) = read_rows(out)
    assert paper["image_size"] == "512" and paper["backbone"] == "sd-1-5"
    assert 1.0e9 < int(paper["frozen_params"]) < 1.1e9  # SD 1.x: UNet 860M, VAE 84M, CLIP ViT-L/14 text 123M
    assert float(paper["unet_gflops"]) > 100 * float(ci_rows["cp-none"]["unet_gflops"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiments", "full,no-such", "--no-timing"], "'no-such' is not one of params.yaml `experiments`"),
        (["--experiments", "full,full", "--no-timing"], "'full' is named twice"),
        ([], "--timings: needed unless --no-timing"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    argv = ["measure-cost", "--scale", "ci", "--out", str(tmp_path / "cost.csv"), *args]
    if "--experiments" not in args:
        argv += ["--experiments", "full"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("diffris measure-cost: error:")
    assert not (tmp_path / "cost.csv").exists()
