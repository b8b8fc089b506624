"""`diffris check-results`: a rerun against the committed results, cell by cell, yes or no."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from diffris.cli import main
from diffris.report.tables import build_report, write_tables
from report_fakes import SCALE, report_params, write_all_evaluations, write_params

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> dict:
    """A results folder (tables and intervals) as `make mini` would leave it, and its params."""
    root = tmp_path_factory.mktemp("check")
    params = report_params()
    write_all_evaluations(root / "metrics", params)
    for written in build_report(params, REFERENCE, root / "metrics", SCALE):
        write_tables(written, root / "results" / "tables")
    return {"results": root / "results", "params": write_params(params, root / "params.yaml")}


def rerun_copy(committed: dict, tmp_path: Path) -> Path:
    rerun = tmp_path / "rerun"
    shutil.copytree(committed["results"], rerun)
    return rerun


def set_cell(path: Path, label: str, column: str, value: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row[next(iter(row))] == label and row["source"] != "paper":
            row[column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def interval(results: Path, table: str, label: str, split: str, metric: str) -> tuple[float, float]:
    with open(results / "tables" / f"{table}-intervals.csv", newline="") as f:
        line = next(r for r in csv.DictReader(f) if (r["label"], r["split"], r["metric"]) == (label, split, metric))
    return float(line["ci_low"]), float(line["ci_high"])


def check(committed: dict, rerun: Path, *extra: str) -> int:
    return main(["check-results", "--results", str(rerun), "--params", str(committed["params"]), *extra])


def test_identical_results_agree(committed, tmp_path, capsys):
    rerun = rerun_copy(committed, tmp_path)
    assert check(committed, rerun, "--reference", str(committed["results"])) == 0
    out = capsys.readouterr().out
    assert "yes: every regenerated cell lies within its committed interval" in out
    assert "7 of 7 table files byte-identical" in out and " 0 outside" in out


def test_a_cell_outside_its_committed_interval_is_a_no(committed, tmp_path, capsys):
    rerun = rerun_copy(committed, tmp_path)
    low, high = interval(committed["results"], "table4", "w/o CP-adapter", "test", "oIoU")
    set_cell(rerun / "tables" / "table4.csv", "w/o CP-adapter", "oIoU", f"{high + 1:.2f}")
    inside = f"{(low + high) / 2:.2f}"
    set_cell(rerun / "tables" / "table1.csv", "DiffRIS, shuffled expressions", "mIoU_val", inside)
    assert check(committed, rerun, "--reference", str(committed["results"])) == 1
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    outside = [line for line in lines if "NO" in line]
    assert len(outside) == 1 and outside[0][:2] == ["table4", "w/o"] and f"{high + 1:.2f}" in outside[0]
    moved = next(line for line in lines if line[:5] == ["table1", "DiffRIS,", "shuffled", "expressions", "val"] and "mIoU" in line)
    assert moved[-2:] == ["yes", "no"]  # within its interval, not the same bytes
    assert "no: 1 cell(s) outside their committed interval" in out and "5 of 7 table files byte-identical" in out


def test_by_default_the_committed_side_comes_from_git(committed, tmp_path, capsys):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(committed["results"], repo / "results" / "mini")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "results"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    results = repo / "results" / "mini"
    assert check(committed, results) == 0
    assert f"against committed git HEAD:{results}" in capsys.readouterr().out
    set_cell(results / "tables" / "fig8.csv", "random", "mIoU", "99.99")
    assert check(committed, results) == 1
    (results / "tables" / "table6-intervals.csv").unlink()
    subprocess.run([*git, "rm", "-q", "--cached", "results/mini/tables/table6-intervals.csv"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "drop"], check=True)
    assert check(committed, results) == 2
    assert "table6-intervals.csv: not in git revision HEAD" in capsys.readouterr().err
