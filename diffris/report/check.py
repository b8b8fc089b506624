"""``diffris check-results``: does a rerun agree with the committed results, cell by cell?

Where a rerun cannot give the same bytes (another CPU, another torch build), the question is
whether it gives the same results within their uncertainty. For every regenerated cell of every
table (``tables/<name>.csv``, rows ``regenerated`` and ``control``) this compares the rerun's value
with the committed one and its committed 95 % bootstrap interval (``tables/<name>-intervals.csv``):

- ``identical``: the two cells are the same text;
- ``within``: the rerun's value lies in the committed interval, widened by half a unit of the
  table's last digit (``SLACK``: the cell is rounded to two decimals, the bounds to four).

The answer is yes (exit 0) when every cell is within its interval, no (exit 1) otherwise; a rerun
row missing from either side counts as not within. The committed side is, by default, the
results folder as committed in git (``git show HEAD:<path>``), so that ``make mini`` followed by
``diffris check-results --results results/mini`` compares the rerun with what was committed;
``--reference DIR`` takes another folder laid out like ``results/<scale>`` instead (another
machine's copy, or a ``git worktree`` of another revision).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from diffris.errors import DataError
from diffris.report.table_csv import PAPER, SOURCE, Table, metric_column, parse_table, read_table
from diffris.report.tables import INTERVALS_SUFFIX, TABLE_NAMES, TableSpec, table_specs

SLACK = 0.005  # half a unit of the tables' second decimal


@dataclass(frozen=True)
class CellCheck:
    table: str
    label: str
    source: str
    split: str
    metric: str
    committed: str  # empty where the committed table has no such row
    low: float | None
    high: float | None
    rerun: str  # empty where the rerun has no such row

    @property
    def identical(self) -> bool:
        return self.committed == self.rerun and self.committed != ""

    @property
    def within(self) -> bool:
        if not self.rerun or self.low is None or self.high is None:
            return False
        return self.low - SLACK <= float(self.rerun) <= self.high + SLACK


class Committed:
    """The committed side: a folder, or a git revision of the results folder."""

    def __init__(self, results: Path, reference: Path | None = None, revision: str = "HEAD"):
        self.results, self.reference, self.revision = Path(results), reference, revision

    def describe(self) -> str:
        return str(self.reference) if self.reference else f"git {self.revision}:{self.results}"

    def read(self, relative: str) -> tuple[Table, bytes]:
        """A committed table and its bytes."""
        if self.reference is not None:
            path = Path(self.reference) / relative
            return read_table(path), _read_bytes(path)
        data = self._git_show(relative)
        return parse_table(data.decode("utf-8"), f"{self.revision}:{self.results / relative}"), data

    def _git_show(self, relative: str) -> bytes:
        folder = self.results if self.results.is_dir() else Path(".")
        try:
            proc = subprocess.run(
                ["git", "-C", str(folder), "show", f"{self.revision}:./{relative}"], capture_output=True, check=False
            )
        except FileNotFoundError:
            raise DataError("git is not installed: pass --reference DIR (the committed results folder)") from None
        if proc.returncode != 0:
            reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise DataError(
                f"{self.results / relative}: not in git revision {self.revision} "
                f"({reason[-1] if reason else 'git show failed'}); pass --reference DIR"
            )
        return proc.stdout


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: missing")
    return path.read_bytes()


def regenerated_rows(table: Table) -> dict[tuple[str, str], dict[str, str]]:
    return {(row[table.key], row[SOURCE]): row for row in table.rows if row[SOURCE] != PAPER}


def check_table(spec: TableSpec, rerun: Table, committed: Table, intervals: Table) -> list[CellCheck]:
    """Every regenerated cell of either side's table, in the rerun's row order then the committed's."""
    bounds = {(r["label"], r["split"], r["metric"]): r for r in intervals.rows}
    ours, theirs = regenerated_rows(rerun), regenerated_rows(committed)
    checks = []
    for label, source in [*ours, *(key for key in theirs if key not in ours)]:
        mine, committed_row = ours.get((label, source), {}), theirs.get((label, source), {})
        for column in rerun.columns if mine else committed.columns:
            metric = metric_column(column)
            if metric is None:
                continue
            split = metric[1] or spec.split or ""
            line = bounds.get((label, split, metric[0]))
            checks.append(CellCheck(
                spec.name, label, source, split, metric[0], committed_row.get(column, ""),
                float(line["ci_low"]) if line else None, float(line["ci_high"]) if line else None,
                mine.get(column, ""),
            ))  # fmt: skip
    return checks


@dataclass(frozen=True)
class Outcome:
    checks: list[CellCheck]
    identical_files: dict[str, bool]  # table file -> byte-identical

    @property
    def agrees(self) -> bool:
        return bool(self.checks) and all(check.within for check in self.checks)


def check_results(params: dict, results: Path, committed: Committed) -> Outcome:
    """Compare ``results/tables/<name>.csv`` of every table of params.yaml with the committed
    tables and intervals."""
    specs = table_specs(params)
    checks, identical = [], {}
    for name in (name for name in TABLE_NAMES if name in specs):
        table_file, intervals_file = f"tables/{name}.csv", f"tables/{name}{INTERVALS_SUFFIX}.csv"
        rerun = read_table(Path(results) / table_file)
        committed_table, committed_bytes = committed.read(table_file)
        intervals, _ = committed.read(intervals_file)
        identical[table_file] = committed_bytes == _read_bytes(Path(results) / table_file)
        checks += check_table(specs[name], rerun, committed_table, intervals)
    return Outcome(checks, identical)


def format_outcome(outcome: Outcome, committed: Committed, results: Path) -> str:
    """One table of every cell, then the verdict."""
    rows = [
        [c.table, c.label, c.split, c.metric, c.committed or "—",
         "—" if c.low is None else f"[{c.low:.2f}, {c.high:.2f}]", c.rerun or "—",
         "yes" if c.within else "NO", "yes" if c.identical else "no"]
        for c in outcome.checks
    ]  # fmt: skip
    headers = ["table", "row", "split", "metric", "committed", "committed 95 % CI", "rerun", "within", "identical"]
    outside = [c for c in outcome.checks if not c.within]
    same = sum(c.identical for c in outcome.checks)
    files = sum(outcome.identical_files.values())
    lines = [
        f"rerun {results} against committed {committed.describe()}",
        tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True),
        "",
        f"{len(outcome.checks)} cells: {same} identical, {len(outcome.checks) - len(outside)} within their "
        f"committed 95 % interval, {len(outside)} outside; {files} of {len(outcome.identical_files)} table files "
        "byte-identical",
    ]
    if outcome.agrees:
        lines.append("yes: every regenerated cell lies within its committed interval")
    else:
        lines.append(f"no: {len(outside)} cell(s) outside their committed interval (marked NO)")
    return "\n".join(lines)
