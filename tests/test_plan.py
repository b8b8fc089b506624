"""`diffris plan` on given throughput files: runs, hours per table, and an honest unit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffris.pipeline import jobs
from diffris.config import load_params, scale_params
from conftest import run_cli

TRAIN_RATE, EVAL_RATE, CACHE_RATE = 8.0, 32.0, 64.0


def results_file(tmp_path: Path, device_kind: str) -> Path:
    rates = {"train_samples_per_s": TRAIN_RATE, "eval_samples_per_s": EVAL_RATE, "cache_samples_per_s": CACHE_RATE}
    if device_kind == "cpu":  # a shared CPU's wall clock is not used: the per-CPU-second rates are
        rates.update(train_samples_per_s=1.0, eval_samples_per_s=1.0,
                     train_samples_per_cpu_s=TRAIN_RATE, eval_samples_per_cpu_s=EVAL_RATE)  # fmt: skip
    results = {
        "device_kind": device_kind, "device": "Test Device", "threads": 1 if device_kind == "cpu" else None,
        "scale": "paper", "experiments": {"full": {"naive": rates, "optimised": rates}},
    }  # fmt: skip
    path = tmp_path / f"{device_kind}.json"
    path.write_text(json.dumps(results))
    return path


def expected_hours(params: dict, experiment: str, dataset: str) -> float:
    """Training + validation + evaluations of one run at the paper scale, by hand."""
    train = scale_params(params, "paper")["train"]
    sizes = params["datasets"][dataset]["paper_splits"]
    trained = train["epochs"] * (sizes["train"] // train["batch_size"]) * train["batch_size"]
    evaluations = [e for e in jobs.evaluations(params) if (e.experiment, e.dataset) == (experiment, dataset)]
    passes = sum(sizes[e.split] * (2 if e.shuffled else 1) for e in evaluations)  # shuffled: both ways
    evaluated = train["epochs"] * sizes["val"] + passes  # val every epoch at paper
    return (trained / TRAIN_RATE + evaluated / EVAL_RATE) / 3600


def row(output: str, *cells: str) -> list[str]:
    for line in output.splitlines():
        parts = line.split()
        if parts[: len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} in:\n{output}")


def test_gpu_measurement_gives_gpu_hours_per_run_and_table(tmp_path):
    params = load_params()
    out = run_cli("plan", "--benchmark", results_file(tmp_path, "cuda")).stdout
    assert "GPU-hours" in out and "CPU" not in out
    assert float(row(out, "full", "rrsisd")[6]) == pytest.approx(expected_hours(params, "full", "rrsisd"), abs=0.01)
    runs = jobs.runs(params)
    total = float(re.search(rf"{len(runs)} training runs: ([\d.]+) GPU-hours", out).group(1))
    per_run = sum(expected_hours(params, r.experiment, r.dataset) for r in runs)
    assert total == pytest.approx(per_run, abs=0.05)
    new = sum(float(row(out, name)[4]) for name in [*params["tables"], *params["figures"]])
    assert new == pytest.approx(total, abs=0.05)  # each run counted once, under its first table
    assert int(row(out, "table4")[1]) == 4 and int(row(out, "table4")[3]) == 3  # `full` counted in table1


def test_cpu_measurement_is_flagged_as_cpu_hours(tmp_path):
    out = run_cli("plan", "--benchmark", results_file(tmp_path, "cpu")).stdout
    assert "NOT GPU-hours" in out and "CPU-hours" in out and "GPU-hours (" not in out
    params = load_params()
    assert float(row(out, "full", "rrsisd")[6]) == pytest.approx(expected_hours(params, "full", "rrsisd"), abs=0.01)


def test_throughput_can_be_given_on_the_command_line():
    out = run_cli("plan", "--throughput", str(TRAIN_RATE), str(EVAL_RATE)).stdout
    assert "device-hours" in out and "as given on the command line" in out
    assert "feature caches: not estimated" in out
