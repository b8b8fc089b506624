"""The whole DAG at the test-sized `ci` scale, run by Snakemake in a copy of the workflow."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ci_snakemake


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return ci_snakemake(workdir, "--cores", "2", *args)


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
    assert "not comparable" in (results / "comparison.md").read_text()
    assert len(list((workflow_copy / "runs" / "ci").glob("*/*/model.safetensors"))) == 18


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
    assert jobs.get("train") == "1" and jobs.get("evaluate") == "1", proc.stdout
    assert "fetch" not in jobs and "prepare" not in jobs and "fetch_weights" not in jobs
