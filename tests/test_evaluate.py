"""`diffris evaluate` on a run of the real tiny model (trained once per session, see test_train)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffris.evaluation.evaluate import figure_indices, shuffled_expressions
from diffris.training.metrics import METRIC_KEYS, metrics_from_counts
from conftest import run_cli
from test_train import ENV, Assets, shared_assets

TEST_SAMPLES = 8


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory) -> tuple[Assets, Path, Path]:
    """The reference run of test_train evaluated on test, plainly and with shuffled expressions."""
    assets = shared_assets(tmp_path_factory)
    run = assets.run("reference")
    out = assets.root / "metrics"
    run_cli("evaluate", "--run", run, "--split", "test", "--out", out / "test.json", env=ENV)
    shuffled = ("--out", out / "test-shuffled.json", "--shuffle-expressions")
    run_cli("evaluate", "--run", run, "--split", "test", *shuffled, env=ENV)
    return assets, out / "test.json", out / "test-shuffled.json"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest(assets: Assets, split: str) -> list[dict]:
    lines = (assets.data / split / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_metrics_json_names_the_run_and_holds_the_papers_metrics(evaluated):
    _, path, _ = evaluated
    report = json.loads(path.read_text())
    assert (report["experiment"], report["dataset"], report["split"]) == ("full", "refsegrs", "test")
    assert report["num_samples"] == TEST_SAMPLES and report["shuffle_expressions"] is False
    assert report["checkpoint"]["selected"] == "best-val"
    assert sorted(report["metrics"]) == sorted(METRIC_KEYS)
    assert all(0.0 <= v <= 100.0 for v in report["metrics"].values())
    assert path.read_text() == json.dumps(report, indent=2, sort_keys=True) + "\n"


def test_per_sample_csv_reproduces_the_metrics(evaluated):
    assets, path, _ = evaluated
    rows = read_rows(path.with_suffix(".csv"))
    assert list(rows[0]) == ["index", "id", "expression", "I", "U", "IoU"]
    records = manifest(assets, "test")
    assert [r["id"] for r in rows] == [r["sample_id"] for r in records]
    assert [r["expression"] for r in rows] == [r["expression"] for r in records]
    metrics = metrics_from_counts([int(r["I"]) for r in rows], [int(r["U"]) for r in rows])
    report = json.loads(path.read_text())
    assert report["metrics"] == {k: round(v, 4) for k, v in metrics.items()}


def test_prediction_pngs_are_picked_by_position_and_match_the_csv(evaluated):
    assets, path, _ = evaluated
    folder = path.with_name("test-predictions")
    pngs = sorted(folder.glob("*.png"))
    assert [int(p.stem) for p in pngs] == figure_indices(TEST_SAMPLES) == [0, 2, 5, 7]
    masks = np.load(assets.data / "test" / "masks.npy")
    rows = read_rows(path.with_suffix(".csv"))
    for png in pngs:
        pred = np.asarray(Image.open(png)) > 127
        gt = masks[int(png.stem)].astype(bool)
        row = rows[int(png.stem)]
        assert (int(row["I"]), int(row["U"])) == ((pred & gt).sum(), (pred | gt).sum())


def test_shuffled_control_reports_both_numbers(evaluated):
    assets, plain, shuffled = evaluated
    report = json.loads(shuffled.read_text())
    assert report["shuffle_expressions"] is True
    assert report["unshuffled_metrics"] == json.loads(plain.read_text())["metrics"]
    own = [r["expression"] for r in manifest(assets, "test")]
    used = [r["expression"] for r in read_rows(shuffled.with_suffix(".csv"))]
    assert used == shuffled_expressions(own, seed=0) and sorted(used) == sorted(own)


def test_same_command_gives_identical_outputs(evaluated, tmp_path):
    assets, path, _ = evaluated
    again = tmp_path / "test.json"
    run_cli("evaluate", "--run", assets.run("reference"), "--split", "test", "--out", again, env=ENV)
    assert again.read_bytes() == path.read_bytes()
    assert again.with_suffix(".csv").read_bytes() == path.with_suffix(".csv").read_bytes()


def test_shuffle_is_a_seeded_derangement():
    expressions = [f"expression {i}" for i in range(20)]
    shuffled = shuffled_expressions(expressions, seed=3)
    assert shuffled == shuffled_expressions(expressions, seed=3) != shuffled_expressions(expressions, seed=4)
    assert sorted(shuffled) == sorted(expressions)
    assert all(a != b for a, b in zip(shuffled, expressions))


def test_figure_indices_are_evenly_spaced_and_bounded():
    assert figure_indices(100, 4) == [0, 33, 66, 99]
    assert figure_indices(2, 4) == [0, 1]
    assert figure_indices(1, 4) == [0]


def test_evaluate_rejects_a_run_folder_without_a_run(tmp_path):
    out, run = tmp_path / "x.json", tmp_path / "run"
    run.mkdir()
    result = run_cli("evaluate", "--run", run, "--split", "test", "--out", out, check=False)
    assert result.returncode == 2 and "config.json: missing" in result.stderr
