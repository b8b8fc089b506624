"""`diffris report-costs`: Snakemake's benchmark files of a scale gathered into one cost table."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from diffris.pipeline import jobs as pipeline_jobs
from diffris.cli import main
from diffris.config import load_params

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmarks(root: Path, params: dict, scale: str) -> list[tuple[str, str]]:
    """A benchmark file for every benchmarked job: job k ran 10+k s, used 100+k MB and 5+k CPU s."""
    jobs = pipeline_jobs.benchmarked_jobs(params, scale)
    for k, (rule, job) in enumerate(jobs):
        path = Path(pipeline_jobs.job_file(str(root), scale, rule, job, ".tsv"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"{10 + k}.0\t0:00:{10 + k}\t{100 + k}.0\t1.0\t1.0\t1.0\t0.0\t0.0\t50.0\t{5 + k}.0\n")
    return jobs


def test_one_row_per_benchmarked_job_and_a_total(tmp_path):
    params = load_params()
    jobs = write_benchmarks(tmp_path / "jobs", params, "ci")
    out = tmp_path / "results" / "jobs-ci.csv"
    assert main(["report-costs", "--benchmarks", str(tmp_path / "jobs"), "--scale", "ci", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["rule", "job", "runtime_s", "max_rss_mb", "cpu_time_s"]
    assert [(r["rule"], r["job"]) for r in rows[:-1]] == jobs
    assert {rule for rule, _ in jobs} == set(pipeline_jobs.BENCHMARKED)  # every measured rule has jobs at ci
    n = len(jobs)
    assert rows[-1] == {
        "rule": "total", "job": f"{n} jobs", "runtime_s": f"{sum(10 + k for k in range(n)):.1f}",
        "max_rss_mb": f"{100 + n - 1:.1f}", "cpu_time_s": f"{sum(5 + k for k in range(n)):.1f}",
    }  # fmt: skip
    markdown = out.with_suffix(".md").read_text()
    train = sum(rule == "train" for rule, _ in jobs)
    assert re.search(rf"^\| train +\| {train} +\|", markdown, re.MULTILINE)
    assert re.search(rf"^\| \*\*total\*\* +\| {n} +\| {rows[-1]['runtime_s']} +\|", markdown, re.MULTILINE)


def test_a_job_too_short_to_measure_has_empty_memory_and_cpu(tmp_path):
    params = load_params()
    rule, job = write_benchmarks(tmp_path, params, "ci")[0]
    Path(pipeline_jobs.job_file(str(tmp_path), "ci", rule, job, ".tsv")).write_text(HEADER + "0.5\t0:00:00\t" + "NA\t" * 7 + "NA\n")
    out = tmp_path / "jobs-ci.csv"
    assert main(["report-costs", "--benchmarks", str(tmp_path), "--scale", "ci", "--out", str(out)]) == 0
    assert next(csv.DictReader(out.open())) == {"rule": rule, "job": job, "runtime_s": "0.5", "max_rss_mb": "", "cpu_time_s": ""}


def test_a_missing_or_broken_benchmark_file_is_one_line_naming_it(tmp_path, capsys):
    params = load_params()
    jobs = write_benchmarks(tmp_path, params, "ci")
    train = Path(pipeline_jobs.job_file(str(tmp_path), "ci", *next(j for j in jobs if j[0] == "train"), ".tsv"))
    train.unlink()
    args = ["report-costs", "--benchmarks", str(tmp_path), "--scale", "ci", "--out", str(tmp_path / "c.csv")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{train}: missing benchmark file of train" in err and "dvc repro" in err
    train.write_text(HEADER + "ten\t0\t1\t1\t1\t1\t0\t0\t1\t1\n")
    assert main(args) == 2
    assert f"{train}: column 's' is 'ten', expected a number" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()
