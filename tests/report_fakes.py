"""Hand-made evaluations for the report tests: what `diffris evaluate` writes, for every seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

from diffris.config import load_params
from diffris.training.metrics import metrics_from_counts, sample_iou
from diffris.config import seeds
from diffris.report.tables import metrics_path, table_specs

NUM_SAMPLES = 6
SCALE = "mini"
SEEDS = 2  # the tests' mini scale: several seeds, whatever params.yaml's mini uses


def report_params() -> dict:
    """The repository's params.yaml with ``SEEDS`` seeds for every experiment at the mini scale
    (per-experiment seeds are tested in tests/test_pipeline_sync.py)."""
    params = load_params()
    params["scales"][SCALE]["seeds"] = SEEDS
    params["scales"][SCALE].pop("seeded_experiments", None)
    return params


def write_params(params: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def sample_ids(dataset: str) -> list[str]:
    return [f"{dataset}-{i}" for i in range(NUM_SAMPLES)]


def fake_counts(experiment: str, dataset: str, split: str, seed: int, shuffled: bool) -> list[tuple[int, int]]:
    """Per-sample (I, U), seeded by the evaluation; the last sample has an empty union."""
    rng = np.random.default_rng([sum(map(ord, f"{experiment}/{dataset}/{split}/{shuffled}")), seed])
    unions = rng.integers(4, 20, NUM_SAMPLES)
    intersections = rng.integers(0, unions + 1)
    unions[-1] = intersections[-1] = 0
    return list(zip(intersections.tolist(), unions.tolist()))


def fake_metrics(experiment: str, dataset: str, split: str, seed: int, shuffled: bool = False) -> dict[str, float]:
    """The metrics JSON's values (four decimals, as `diffris evaluate` rounds them)."""
    counts = fake_counts(experiment, dataset, split, seed, shuffled)
    metrics = metrics_from_counts([i for i, _ in counts], [u for _, u in counts])
    return {key: round(value, 4) for key, value in metrics.items()}


def expected_cell(params: dict, experiment: str, dataset: str, split: str, key: str, shuffled: bool = False) -> str:
    """A regenerated table cell: the mean over seeds, two decimals."""
    values = [fake_metrics(experiment, dataset, split, s, shuffled)[key] for s in seeds(params, SCALE, experiment)]
    return f"{sum(values) / len(values):.2f}"


def write_evaluation(json_path: Path, experiment: str, dataset: str, split: str, seed: int, shuffled: bool) -> None:
    counts = fake_counts(experiment, dataset, split, seed, shuffled)
    report = {
        "experiment": experiment,
        "dataset": dataset,
        "split": split,
        "num_samples": NUM_SAMPLES,
        "shuffle_expressions": shuffled,
        "metrics": fake_metrics(experiment, dataset, split, seed, shuffled),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_per_sample(json_path.with_suffix(".csv"), sample_ids(dataset), counts)


def write_per_sample(path: Path, ids: list[str], counts: list[tuple[int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "id", "expression", "I", "U", "IoU"])
        for index, (sample_id, (i, u)) in enumerate(zip(ids, counts, strict=True)):
            writer.writerow([index, sample_id, f"the vehicle number {index} on the left", i, u, f"{sample_iou(i, u):.6f}"])


def write_all_evaluations(metrics_dir: Path, params: dict) -> None:
    """Every evaluation the tables read, for every seed of the tests' scale."""
    for spec in table_specs(params).values():
        for row in spec.rows:
            for split in spec.splits:
                for seed in seeds(params, SCALE, row.experiment):
                    path = metrics_path(metrics_dir, row.experiment, spec.dataset, split, seed, row.shuffled)
                    write_evaluation(path, row.experiment, spec.dataset, split, seed, row.shuffled)
