"""Snakemake and DVC conventions on the session's built `ci` tree (tests/conftest.py, ci_local_run):
a log for every job, benchmark files and the cost table, `snakemake --report`, `snakemake --lint`,
`dvc plots` of every run's curves and `dvc exp run -S` on one evaluation (docs/pipeline.md); and
`dvc repro` of two stages in a fresh repository."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, ci_snakemake, copy_workflow, run_cli
from diffris.pipeline import jobs as pipeline_jobs
from diffris.config import load_params

BIN = Path(sys.executable).parent
TARGET = "evaluate-full-rrsisd-seed0-test"  # the DVC experiment's target: its ancestors only
TAU = "model.pcmrd.tau_init"


def jobs_run(work: Path) -> dict[str, dict]:
    """Every job Snakemake ran in ``work``, by job hash, from its records in .snakemake/metadata."""
    records = [json.loads(p.read_text()) for p in (work / ".snakemake" / "metadata").iterdir()]
    return {r["job_hash"]: r for r in records}


def test_every_job_wrote_a_log_and_every_measured_job_a_benchmark(ci_local_run):
    jobs = jobs_run(ci_local_run)
    assert len(jobs) > 50
    for job in jobs.values():
        assert len(job["log"]) == 1, job["rule"]
        log = ci_local_run / job["log"][0]
        assert log.is_file() and log.stat().st_size > 0, log
    params = load_params(ci_local_run / "params.yaml")
    expected = {pipeline_jobs.job_file(pipeline_jobs.BENCHMARKS, "ci", r, j, ".tsv") for r, j in pipeline_jobs.benchmarked_jobs(params, "ci")}
    found = {str(p.relative_to(ci_local_run)) for p in (ci_local_run / pipeline_jobs.BENCHMARKS).rglob("*.tsv")}
    assert found == expected
    assert all((ci_local_run / path).stat().st_size > 0 for path in found)


def test_costs_gathers_one_row_per_measured_job_and_a_total(ci_local_run):
    proc = ci_snakemake(ci_local_run, "--cores", "1", "costs")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = list(csv.DictReader(open(ci_local_run / "benchmarks" / "results" / "jobs-ci.csv")))
    params = load_params(ci_local_run / "params.yaml")
    assert [(r["rule"], r["job"]) for r in rows[:-1]] == pipeline_jobs.benchmarked_jobs(params, "ci")
    assert rows[-1]["rule"] == "total" and rows[-1]["job"] == f"{len(rows) - 1} jobs"
    assert float(rows[-1]["runtime_s"]) == pytest.approx(sum(float(r["runtime_s"]) for r in rows[:-1]), abs=0.1 * len(rows))
    assert all(float(r["runtime_s"]) > 0 for r in rows if r["rule"] == "train")
    assert "**total**" in (ci_local_run / "benchmarks" / "results" / "jobs-ci.md").read_text()


def test_the_report_shows_the_tables_figures_and_comparison_with_captions(ci_local_run):
    report = ci_local_run / "results" / "ci" / "report.html"
    proc = ci_snakemake(ci_local_run, "--report", str(report.relative_to(ci_local_run)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = report.read_text()
    for name in [f"table{k}.csv" for k in range(1, 7)] + ["fig8.csv", "table4-intervals.csv", "comparison.md"]:
        assert name in html, name
    for figure in ("fig5", "fig6", "fig7", "fig8", "assignment"):
        assert f"{figure}.png" in html, figure
    assert "Table 5: decoders on the RRSIS-D test split" in html  # a caption (workflow/report/table5.rst)
    assert "The DiffRIS benchmark suite at scale" in html  # the workflow description


def test_lint_is_clean():
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


# --- DVC on a copy of the built tree: git + dvc init, dvc.yaml of the ci scale, outputs adopted


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True, env=repo_env())
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def repo_env() -> dict:
    identity = {"GIT_AUTHOR_NAME": "diffris", "GIT_AUTHOR_EMAIL": "dev@diffris", "GIT_COMMITTER_NAME": "diffris",
                "GIT_COMMITTER_EMAIL": "dev@diffris"}  # fmt: skip
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", **identity)


def init_repo(repo: Path) -> None:
    """``repo`` as a git + DVC repository with the project's ignore files and the ci scale's dvc.yaml."""
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    run_cli("export-dvc", "--params", repo / "params.yaml", "--scale", "ci", "--out", repo / "dvc.yaml")
    subprocess.run(["git", "-c", "init.defaultBranch=main", "init", "-q"], cwd=repo, check=True, env=repo_env())
    dvc(repo, "init", "-q")


@pytest.mark.e2e
def test_dvc_repro_runs_two_stages_in_a_fresh_repository(tmp_path):
    """The fast end-to-end check of DVC itself: fetch and prepare one dataset, then nothing to do."""
    repo = copy_workflow(tmp_path / "repo")
    init_repo(repo)
    proc = dvc(repo, "repro", "prepare-refsegrs")
    assert "Running stage 'fetch-refsegrs'" in proc.stdout and "Running stage 'prepare-refsegrs'" in proc.stdout
    assert json.loads((repo / "data/prepared/ci/refsegrs/summary.json").read_text())["dataset"] == "refsegrs"
    assert "up to date" in dvc(repo, "status", "prepare-refsegrs").stdout


@pytest.fixture(scope="module")
def dvc_repo(ci_local_run, tmp_path_factory) -> Path:
    """The built ci tree as a git + DVC repository whose dvc.yaml is the ci scale's; the outputs of
    TARGET and its ancestors adopted (`dvc commit`), everything committed."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    shutil.copytree(ci_local_run, repo, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    init_repo(repo)
    dvc(repo, "commit", "-f", "--with-deps", TARGET, "report-curves")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=repo_env())
    subprocess.run(["git", "commit", "-q", "-m", "ci tree"], cwd=repo, check=True, env=repo_env())
    return repo


def test_dvc_plots_draw_every_runs_curves(dvc_repo):
    shown = json.loads(dvc(dvc_repo, "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"][:3]
    assert set(shown["data"]) == {"training loss per step", "training loss per epoch", "validation per epoch"}
    params = load_params(dvc_repo / "params.yaml")
    files = {f.removeprefix("results/ci/curves/") for f in pipeline_jobs.curve_files(params, "ci")}
    steps, epochs = {f for f in files if f.endswith("-steps.csv")}, {f for f in files if not f.endswith("-steps.csv")}
    for name, y, expected in (("training loss per step", "loss", steps), ("training loss per epoch", "train_loss", epochs)):
        [plot] = shown["data"][name]
        values = plot["content"]["data"]["values"]
        assert {v["filename"] for v in values} == expected, name  # every run and seed
        assert all(float(v[y]) > 0 for v in values), name


def test_dvc_exp_run_with_a_changed_model_key_retrains_and_reevaluates(dvc_repo):
    metrics = dvc_repo / "results" / "ci" / "metrics" / "full" / "rrsisd" / "seed0" / "test.json"
    before = json.loads(metrics.read_text())
    proc = dvc(dvc_repo, "exp", "run", "-S", f"{TAU}=0.5", TARGET)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'train-full-rrsisd-seed0':", f"Running stage '{TARGET}':"], proc.stdout
    after = json.loads(metrics.read_text())
    # the learned temperature starts at tau_init: the PCMRD diagnostics must change (the 2-step ci
    # run may leave the coarse IoU metrics as they were)
    assert after["assignment"] != before["assignment"]
    shown = json.loads(dvc(dvc_repo, "exp", "show", "--json").stdout)
    experiments = [e for entry in shown for e in entry.get("experiments") or []]
    assert len(experiments) == 1
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["pcmrd"]["tau_init"] == 0.5
    assert "oIoU" in json.dumps(data["metrics"][str(metrics.relative_to(dvc_repo))])
