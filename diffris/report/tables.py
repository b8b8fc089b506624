"""The paper's tables with the regenerated rows beside them.

A reference table (``results/reference/<name>.csv``) is a CSV whose first column is the row key
(``method``, ``variant``, ``decoder`` or ``backbone``); its metric columns are either ``<metric>``
(one split, set in params.yaml) or ``<metric>_<split>`` (Tables 1-3: val and test); any other
column is text (the encoders of Tables 1-3).

params.yaml ``tables.<name>`` names the dataset, the split and, per regenerated row, the label of
the paper row it sits beside and the experiment whose metrics fill it. The output table holds
every paper row in the paper's order, each regenerated row right after its paper row, then the
rows marked ``control: true`` (no paper row: the random-backbone control), and a ``source``
column (``paper``, ``regenerated`` or ``control``); numbers have two decimals, as in the paper.

Metrics come from ``<metrics>/<experiment>/<dataset>/<split>.json`` (written by ``diffris evaluate``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from diffris.errors import ConfigError, DataError
from diffris.metrics import METRIC_KEYS

TABLE_NAMES = ("table1", "table2", "table3", "table4", "table5", "table6", "fig8")
SPLITS = ("val", "test")
SOURCE = "source"
PAPER = "paper"
REGENERATED = "regenerated"
CONTROL = "control"  # a regenerated row without a paper row (e.g. the random-backbone control)


@dataclass(frozen=True)
class Table:
    """Rows of string cells, in order; the first column is the row key."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    @property
    def key(self) -> str:
        return self.columns[0]

    def row(self, label: str, source: str = PAPER) -> dict[str, str] | None:
        """The row with this key and source, if any (reference tables have no source column)."""
        for row in self.rows:
            if row[self.key] == label and row.get(SOURCE, PAPER) == source:
                return row
        return None


@dataclass(frozen=True)
class RowSpec:
    label: str
    experiment: str
    control: bool = False  # no paper row: follows the paper's rows, source `control`


@dataclass(frozen=True)
class TableSpec:
    """params.yaml ``tables.<name>``: where the regenerated rows of one table come from."""

    name: str
    dataset: str
    split: str | None
    rows: tuple[RowSpec, ...]

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,) if self.split else SPLITS


def metric_column(column: str) -> tuple[str, str | None] | None:
    """``("oIoU", "test")`` for ``oIoU_test``, ``("oIoU", None)`` for ``oIoU``, None for text."""
    base, _, split = column.rpartition("_")
    if base in METRIC_KEYS and split in SPLITS:
        return base, split
    return (column, None) if column in METRIC_KEYS else None


def format_number(value: float) -> str:
    return f"{value:.2f}"


def read_table(path: Path) -> Table:
    """A CSV as strings (``None`` stays the text ``None``); numbers re-formatted to two decimals."""
    if not path.exists():
        raise DataError(f"{path}: missing")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = tuple(reader.fieldnames or ())
        rows = tuple(_clean_row(row, path, reader.line_num) for row in reader)
    if not columns or not rows:
        raise DataError(f"{path}: expected a header and at least one row")
    return Table(columns, rows)


def _clean_row(row: dict[str, str | None], path: Path, line: int) -> dict[str, str]:
    if None in row or None in row.values():
        raise DataError(f"{path}:{line}: expected as many cells as header columns")
    cleaned = {}
    for column, cell in row.items():
        if metric_column(column) and cell != "":
            try:
                cell = format_number(float(cell))
            except ValueError:
                raise DataError(
                    f"{path}:{line}: {column}: expected a number or nothing, got {cell!r}"
                ) from None
        cleaned[column] = cell
    return cleaned


def write_table(table: Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=table.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table.rows)


def table_specs(params: dict) -> dict[str, TableSpec]:
    """params.yaml ``tables``, checked against ``experiments``."""
    section = params.get("tables")
    if not section:
        raise ConfigError("params.yaml: no `tables` section")
    specs = {}
    for name, entry in section.items():
        rows = tuple(RowSpec(row["label"], row["experiment"], bool(row.get("control"))) for row in entry["rows"])
        _check_rows(f"tables.{name}", rows, params.get("experiments", {}))
        specs[name] = TableSpec(name, entry["dataset"], entry.get("split"), rows)
    return specs


def _check_rows(where: str, rows: tuple[RowSpec, ...], experiments: dict) -> None:
    labels = [row.label for row in rows]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"params.yaml: {where}.rows: a label appears twice")
    for row in rows:
        if row.experiment not in experiments:
            raise ConfigError(
                f"params.yaml: {where}.rows: experiment {row.experiment!r} is not one of `experiments`"
            )


def metrics_path(metrics_dir: Path, experiment: str, dataset: str, split: str) -> Path:
    return Path(metrics_dir) / experiment / dataset / f"{split}.json"


def required_metrics(specs: dict[str, TableSpec], metrics_dir: Path) -> list[Path]:
    """Every metrics JSON the tables read, sorted: the report's inputs."""
    paths = {
        metrics_path(metrics_dir, row.experiment, spec.dataset, split)
        for spec in specs.values()
        for row in spec.rows
        for split in spec.splits
    }
    return sorted(paths)


def read_metrics(path: Path, experiment: str, dataset: str, split: str) -> dict[str, float]:
    """The ``metrics`` of one evaluation JSON, checked against what its path promises."""
    if not path.exists():
        raise DataError(f"{path}: missing; run `diffris evaluate` for {experiment} on {dataset} {split}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise DataError(f"{path}: expected a JSON object with a `metrics` object")
    expected = {"experiment": experiment, "dataset": dataset, "split": split}
    for key, value in expected.items():
        if report.get(key, value) != value:
            raise DataError(f"{path}: holds {key} {report[key]!r}, expected {value!r}")
    if report.get("shuffle_expressions"):
        raise DataError(f"{path}: holds shuffled-expression metrics, not the model's")
    metrics = report["metrics"]
    missing = [key for key in METRIC_KEYS if not isinstance(metrics.get(key), (int, float))]
    if missing:
        raise DataError(f"{path}: `metrics` lacks a number for {', '.join(missing)}")
    return metrics


def regenerated_row(
    paper_row: dict[str, str], columns: tuple[str, ...], spec: TableSpec, experiment: str, metrics_dir: Path
) -> dict[str, str]:
    """The paper row's key and text cells, its metric cells from the experiment's metrics JSON."""
    metrics = {
        split: read_metrics(
            metrics_path(metrics_dir, experiment, spec.dataset, split), experiment, spec.dataset, split
        )
        for split in spec.splits
    }
    row = {SOURCE: REGENERATED}
    for column in columns:
        metric = metric_column(column)
        if metric is None:
            row[column] = paper_row[column]
            continue
        name, split = metric[0], metric[1] or spec.split
        if split not in metrics:
            raise ConfigError(f"params.yaml: tables.{spec.name}: no split set for column {column!r}")
        row[column] = format_number(metrics[split][name])
    return row


def build_table(reference: Table, spec: TableSpec, metrics_dir: Path) -> Table:
    """Paper rows in order, each followed by its regenerated row where params.yaml names one, then
    the control rows (text cells empty)."""
    experiments = {row.label: row.experiment for row in spec.rows if not row.control}
    unknown = sorted(set(experiments) - {row[reference.key] for row in reference.rows})
    if unknown:
        raise ConfigError(
            f"params.yaml: tables.{spec.name}: label(s) {', '.join(map(repr, unknown))} match no "
            f"{reference.key} of the reference table"
        )
    rows = []
    for paper_row in reference.rows:
        rows.append({SOURCE: PAPER, **paper_row})
        label = paper_row[reference.key]
        if label in experiments:
            rows.append(regenerated_row(paper_row, reference.columns, spec, experiments[label], metrics_dir))
    for control in (row for row in spec.rows if row.control):
        if reference.row(control.label) is not None:
            raise ConfigError(f"params.yaml: tables.{spec.name}: control row {control.label!r} has a paper row")
        blank = {reference.key: control.label, **{c: "" for c in reference.columns[1:]}}
        rows.append({**regenerated_row(blank, reference.columns, spec, control.experiment, metrics_dir), SOURCE: CONTROL})
    columns = (reference.key, SOURCE, *reference.columns[1:])
    return Table(columns, tuple({column: row[column] for column in columns} for row in rows))


def build_tables(params: dict, reference_dir: Path, metrics_dir: Path) -> dict[str, Table]:
    """Every table of params.yaml ``tables``, in ``TABLE_NAMES`` order."""
    specs = table_specs(params)
    missing = [str(path) for path in required_metrics(specs, metrics_dir) if not path.exists()]
    if missing:
        raise DataError(
            f"{len(missing)} metrics file(s) missing; run `diffris evaluate` for:\n  " + "\n  ".join(missing)
        )
    return {
        name: build_table(read_table(Path(reference_dir) / f"{name}.csv"), specs[name], metrics_dir)
        for name in TABLE_NAMES
        if name in specs
    }


def write_tables(tables: dict[str, Table], out_dir: Path) -> list[Path]:
    paths = []
    for name, table in tables.items():
        paths.append(Path(out_dir) / f"{name}.csv")
        write_table(table, paths[-1])
    return paths


def format_console(name: str, table: Table) -> str:
    """The rows that have a regenerated twin, paper and regenerated, for the terminal."""
    labels = {row[table.key] for row in table.rows if row[SOURCE] in (REGENERATED, CONTROL)}
    lines = [[row[c] for c in table.columns] for row in table.rows if row[table.key] in labels]
    return f"{name}\n{tabulate(lines, headers=table.columns, tablefmt='simple', disable_numparse=True)}\n"
