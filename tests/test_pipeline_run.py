"""The whole DAG at the test-sized `ci` scale, run by Snakemake in a copy of the workflow."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ci_snakemake, copy_workflow, run_cli
from diffris.config import load_params
from diffris.pipeline import jobs as pipeline_jobs


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return ci_snakemake(workdir, "--cores", "2", *args)


@pytest.mark.e2e
def test_snakemake_fetches_and_prepares_a_dataset_from_nothing(tmp_path):
    """The fast end-to-end check of Snakemake itself: two real jobs in a fresh copy of the workflow."""
    work = copy_workflow(tmp_path / "workflow")
    target = "data/prepared/ci/refsegrs/summary.json"
    proc = snakemake(work, target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.MULTILINE)) == ["fetch", "prepare"]
    summary = json.loads((work / target).read_text())
    assert summary["dataset"] == "refsegrs" and summary["image_size"] == 64
    assert snakemake(work, "-n", target).stdout.count("Nothing to be done") == 1


@pytest.fixture(scope="module")
def workflow_copy(ci_local_run) -> Path:
    return ci_local_run


def test_the_whole_dag_builds_every_table_figure_and_the_comparison(workflow_copy):
    results = workflow_copy / "results" / "ci"
    for table in ("table1", "table2", "table3", "table4", "table5", "table6", "fig8"):
        rows = list(csv.DictReader(open(results / "tables" / f"{table}.csv")))
        regenerated = [r for r in rows if r["source"] == "regenerated"]
        assert regenerated and all(r["source"] in ("paper", "regenerated", "control") for r in rows), table
    for figure in ("fig5", "fig6", "fig7", "fig8"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 1000
    comparison = (results / "comparison.md").read_text()
    assert "not comparable" in comparison and "## Fig. 8 with the backbones' grounding" in comparison
    grounding = list(csv.DictReader(open(results / "grounding.csv")))
    assert [row["backbone"] for row in grounding] == ["tiny-ci-early", "tiny-ci-late", "tiny-random"]
    seeds = len(pipeline_jobs.seeds(load_params(workflow_copy / "params.yaml"), "ci"))
    assert len(list((workflow_copy / "runs" / "ci").glob("*/*/seed*/model.safetensors"))) == 18 * seeds


def test_the_shuffled_control_and_the_intervals_are_built(workflow_copy):
    results = workflow_copy / "results" / "ci"
    for dataset in ("rrsisd", "refsegrs", "risbench"):
        for split in ("val", "test"):
            report = json.loads((results / "metrics" / "full" / dataset / "seed0" / f"{split}-shuffled.json").read_text())
            assert report["shuffle_expressions"] and "unshuffled_metrics" in report
    rows = list(csv.DictReader(open(results / "tables" / "table2.csv")))
    assert [r["source"] for r in rows if r["method"] == "DiffRIS, shuffled expressions"] == ["control"]
    lines = list(csv.DictReader(open(results / "tables" / "table4-intervals.csv")))
    assert len(lines) == 4 * 2 and all(float(r["ci_low"]) <= float(r["ci_high"]) for r in lines)
    assert {r["resolved"] for r in lines if r["label"] != "3 + domain-specific adjustment"} <= {"yes", "no"}
    assert {r["resolved"] for r in lines if r["label"] == "3 + domain-specific adjustment"} == {""}  # the full row
    check = run_cli("check-results", "--results", results, "--reference", results, "--params", workflow_copy / "params.yaml")
    assert "yes: every regenerated cell" in check.stdout


def test_the_assignment_diagnostics_are_logged_evaluated_and_drawn(workflow_copy):
    """Per PCMRD stage: each epoch record of log.jsonl, the evaluation JSON (evaluation and
    training history) and results/ci/figures/assignment.png (docs/model.md)."""
    keys = {"tokens_used", "entropy", "agreement", "tau"}
    run = workflow_copy / "runs" / "ci" / "full" / "rrsisd" / "seed0"
    epochs = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert epochs and all(set(r["assignment"]) == {"stage1", "stage2", "stage3"} for r in epochs)
    assert all(set(stage) == keys for r in epochs for stage in r["assignment"].values())
    report = json.loads((workflow_copy / "results" / "ci" / "metrics" / "full" / "rrsisd" / "seed0" / "test.json").read_text())
    assert set(report["assignment"]) == {"stage1", "stage2", "stage3"}
    assert all(1 <= s["tokens_used"] <= 8 and s["agreement"] == 1.0 for s in report["assignment"].values())  # no noise
    assert [h["epoch"] for h in report["training_assignment"]] == [r["epoch"] for r in epochs]
    baseline = json.loads((workflow_copy / "results" / "ci" / "metrics" / "pcmrd-baseline" / "rrsisd" / "seed0" / "test.json").read_text())
    assert "assignment" not in baseline  # no query tokens, nothing assigned
    assert (workflow_copy / "results" / "ci" / "figures" / "assignment.png").stat().st_size > 1000


def test_the_zoo_target_packs_a_pretraining_run(workflow_copy):
    """`snakemake zoo` at ci size: the ci run's checkpoints packed, with their sha256."""
    proc = snakemake(workflow_copy, "models/zoo/ci/zoo.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((workflow_copy / "models" / "zoo" / "ci" / "zoo.json").read_text())
    assert set(manifest["files"]) == {"tiny-ci-early", "tiny-ci-late"} and manifest["dtype"] == "float16"
    assert snakemake(workflow_copy, "-n", "all").stdout.count("Nothing to be done") == 1  # the build does not depend on it


def test_rerun_with_nothing_changed_does_nothing(workflow_copy):
    proc = snakemake(workflow_copy, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_experiment_reruns_only_what_depends_on_it(workflow_copy):
    params_path = workflow_copy / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["experiments"]["dec-lmp"] = {"decoder": "lmp", "lmp": {"hidden_dim": 16}}
    try:
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        proc = snakemake(workflow_copy, "-n", "--quiet", "rules")
    finally:
        params_path.write_text(original)
    assert proc.returncode == 0, proc.stderr
    jobs = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.strip() and line.split()[-1].isdigit() and len(line.split()) == 2)
    seeds = len(pipeline_jobs.seeds(params, "ci"))
    assert jobs.get("train") == jobs.get("evaluate") == str(seeds), proc.stdout  # one run, Table 5's test split
    assert "fetch" not in jobs and "prepare" not in jobs and "fetch_weights" not in jobs
