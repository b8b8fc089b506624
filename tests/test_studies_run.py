"""Every study built by `snakemake studies` at the test-sized `ci` scale, after the tables."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import ci_snakemake
from diffris.config import load_params
from diffris.studies import plan


@pytest.fixture(scope="module")
def studies(ci_local_run) -> Path:
    proc = ci_snakemake(ci_local_run, "--cores", "2", "studies")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return ci_local_run


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_study_writes_its_table_and_figure(studies):
    params = load_params(studies / "params.yaml")
    outputs = plan.study_outputs(params, "ci")
    assert {Path(p).stem.split("-")[0] for p in outputs} >= {"gumbel", "loss", "order", "touching", "corruptions", "cost", "attention"}
    for path in outputs:
        file = studies / path
        if path.endswith(".png"):
            assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        else:
            assert rows(file), path


def test_every_interval_holds_its_estimate(studies):
    for path in sorted((studies / "results" / "ci" / "studies").glob("*.csv")):
        for row in rows(path):
            for value, low, high in (("mean", "ci_low", "ci_high"), ("delta", "delta_ci_low", "delta_ci_high")):
                if row.get(low):
                    assert float(row[low]) <= float(row[value]) + 1e-4 and float(row[value]) <= float(row[high]) + 1e-4, (path.name, row)


def test_the_studies_reuse_the_tables_runs_and_train_only_their_own(studies):
    params = load_params(studies / "params.yaml")
    trained = {p.parent.parent.relative_to(studies / "runs" / "ci").as_posix() for p in (studies / "runs" / "ci").glob("*/*/seed0/trained.json")}
    expected = {f"{r.experiment}/{r.dataset}" for r in plan.study_runs(params, "ci")}
    assert expected <= trained
    assert not any(name.startswith(("tau-0p1/", "loss-ce-dice/")) for name in trained)  # the same model as `full` at ci


def test_rows_of_experiments_name_the_run_they_read(studies):
    lines = rows(studies / "results" / "ci" / "studies" / "gumbel-tau.csv")
    assert {r["experiment"] for r in lines if r["label"] == "0.1 learnable"} == {"full"}
    assert any(r["metric"] == "stage1 tokens_used" for r in lines)
    order = rows(studies / "results" / "ci" / "studies" / "order.csv")
    assert any(r["label"].startswith("interaction") and r["delta"] for r in order)


def test_studies_rerun_nothing_when_nothing_changed(studies):
    proc = ci_snakemake(studies, "--cores", "2", "-n", "studies")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
