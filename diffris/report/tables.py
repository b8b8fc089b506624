"""The paper's tables with the regenerated rows beside them.

A reference table (``results/reference/<name>.csv``) is a CSV whose first column is the row key
(``method``, ``variant``, ``decoder`` or ``backbone``); its metric columns are either ``<metric>``
(one split, set in params.yaml) or ``<metric>_<split>`` (Tables 1-3: val and test); any other
column is text (the encoders of Tables 1-3).

params.yaml ``tables.<name>`` names the dataset, the split and, per regenerated row, the label of
the paper row it sits beside and the experiment whose metrics fill it (``evaluation: shuffled``:
its shuffled-expression evaluation). The output table holds every paper row in the paper's
order, each regenerated row right after its paper row, then the rows marked ``control: true``
(no paper row: the random-backbone and shuffled-expression controls), and a ``source`` column
(``paper``, ``regenerated`` or ``control``); numbers have two decimals, as in the paper. A
regenerated cell is the mean over the scale's seeds.

Metrics come from ``<metrics>/<experiment>/<dataset>/seed<k>/<split>[-shuffled].json`` and the
per-sample CSV beside it (written by ``diffris evaluate``). Beside each table,
``<name>-intervals.csv`` gives every regenerated cell's uncertainty (``diffris.report.intervals``),
one line per (row, split, metric) in the table's order: ``INTERVAL_COLUMNS``, four decimals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from diffris.errors import ConfigError, DataError
from diffris.training.metrics import METRIC_KEYS
from diffris.report.intervals import (
    CellInterval,
    RowEvaluations,
    check_agrees,
    read_per_sample,
    resample_indices,
    row_intervals,
)
from diffris.report.table_csv import (
    PAPER,
    SOURCE,
    SPLITS,
    Table,
    format_number,
    metric_column,
    read_table,
    write_table,
)

TABLE_NAMES = ("table1", "table2", "table3", "table4", "table5", "table6", "fig8")
REGENERATED = "regenerated"
CONTROL = "control"  # a regenerated row without a paper row (e.g. the random-backbone control)
PLAIN, SHUFFLED = "plain", "shuffled"  # a row's `evaluation`
FULL_EXPERIMENT = "full"  # deltas are taken against the row of this experiment (plain evaluation)
INTERVALS_SUFFIX = "-intervals"
INTERVAL_COLUMNS = (
    "label", "split", "metric", "mean", "std", "seeds", "samples", "ci_low", "ci_high",
    "delta", "delta_ci_low", "delta_ci_high", "resolved",
)  # fmt: skip


@dataclass(frozen=True)
class RowSpec:
    label: str
    experiment: str
    control: bool = False  # no paper row: follows the paper's rows, source `control`
    evaluation: str = PLAIN  # `shuffled`: the run's evaluation with --shuffle-expressions

    @property
    def shuffled(self) -> bool:
        return self.evaluation == SHUFFLED

    @property
    def source(self) -> str:
        return CONTROL if self.control else REGENERATED


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

    @property
    def full_row(self) -> RowSpec | None:
        """The row the deltas are taken against: the full model's, plainly evaluated."""
        return next((r for r in self.rows if r.experiment == FULL_EXPERIMENT and not r.shuffled), None)


def table_specs(params: dict) -> dict[str, TableSpec]:
    """params.yaml ``tables``, checked against ``experiments``."""
    section = params.get("tables")
    if not section:
        raise ConfigError("params.yaml: no `tables` section")
    specs = {}
    for name, entry in section.items():
        rows = tuple(
            RowSpec(row["label"], row["experiment"], bool(row.get("control")), row.get("evaluation", PLAIN))
            for row in entry["rows"]
        )
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


def metrics_path(metrics_dir: Path, experiment: str, dataset: str, split: str, seed: int, shuffled: bool = False) -> Path:
    """``<metrics>/<experiment>/<dataset>/seed<seed>/<split>[-shuffled].json``; its CSV is beside it."""
    name = f"{split}-{SHUFFLED}" if shuffled else split
    return Path(metrics_dir) / experiment / dataset / f"seed{seed}" / f"{name}.json"


SeedsOf = Callable[[str], list[int]]  # experiment -> its seeds (diffris.pipeline.seeds)


def required_metrics(specs: dict[str, TableSpec], metrics_dir: Path, seeds: SeedsOf) -> list[Path]:
    """Every metrics JSON the tables read, sorted: the report's inputs (each with its ``.csv``)."""
    paths = {
        metrics_path(metrics_dir, row.experiment, spec.dataset, split, seed, row.shuffled)
        for spec in specs.values()
        for row in spec.rows
        for split in spec.splits
        for seed in seeds(row.experiment)
    }
    return sorted(paths)


def read_metrics(path: Path, experiment: str, dataset: str, split: str, shuffled: bool = False) -> dict[str, float]:
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
    if bool(report.get("shuffle_expressions")) != shuffled:
        held = "shuffled-expression metrics, not the model's" if not shuffled else "the model's metrics, not shuffled-expression ones"
        raise DataError(f"{path}: holds {held}")
    metrics = report["metrics"]
    missing = [key for key in METRIC_KEYS if not isinstance(metrics.get(key), (int, float))]
    if missing:
        raise DataError(f"{path}: `metrics` lacks a number for {', '.join(missing)}")
    return metrics


def read_row(spec: TableSpec, row: RowSpec, split: str, metrics_dir: Path, seeds: SeedsOf) -> RowEvaluations:
    """One row on one split: every seed's metrics JSON and per-sample CSV (checked to agree)."""
    metrics, samples = [], []
    for seed in seeds(row.experiment):
        path = metrics_path(metrics_dir, row.experiment, spec.dataset, split, seed, row.shuffled)
        metrics.append(read_metrics(path, row.experiment, spec.dataset, split, row.shuffled))
        samples.append(read_per_sample(path.with_suffix(".csv")))
        check_agrees(samples[-1], metrics[-1], path)
    return RowEvaluations(tuple(metrics), tuple(samples))


Evaluated = dict[tuple[str, str], RowEvaluations]  # (label, split) -> the row's evaluations


def regenerated_row(
    paper_row: dict[str, str], columns: tuple[str, ...], spec: TableSpec, label: str, evaluated: Evaluated
) -> dict[str, str]:
    """The paper row's key and text cells, its metric cells the mean over seeds of row ``label``."""
    row = {SOURCE: REGENERATED}
    for column in columns:
        metric = metric_column(column)
        if metric is None:
            row[column] = paper_row[column]
            continue
        name, split = metric[0], metric[1] or spec.split
        if split not in spec.splits:
            raise ConfigError(f"params.yaml: tables.{spec.name}: no split set for column {column!r}")
        values = [m[name] for m in evaluated[label, split].metrics]
        row[column] = format_number(sum(values) / len(values))
    return row


def build_table(reference: Table, spec: TableSpec, evaluated: Evaluated) -> Table:
    """Paper rows in order, each followed by its regenerated row where params.yaml names one, then
    the control rows (text cells empty)."""
    regenerated = {row.label for row in spec.rows if not row.control}
    unknown = sorted(regenerated - {row[reference.key] for row in reference.rows})
    if unknown:
        raise ConfigError(
            f"params.yaml: tables.{spec.name}: label(s) {', '.join(map(repr, unknown))} match no "
            f"{reference.key} of the reference table"
        )
    rows = []
    for paper_row in reference.rows:
        rows.append({SOURCE: PAPER, **paper_row})
        label = paper_row[reference.key]
        if label in regenerated:
            rows.append(regenerated_row(paper_row, reference.columns, spec, label, evaluated))
    for control in (row for row in spec.rows if row.control):
        if reference.row(control.label) is not None:
            raise ConfigError(f"params.yaml: tables.{spec.name}: control row {control.label!r} has a paper row")
        blank = {reference.key: control.label, **{c: "" for c in reference.columns[1:]}}
        rows.append({**regenerated_row(blank, reference.columns, spec, control.label, evaluated), SOURCE: CONTROL})
    columns = (reference.key, SOURCE, *reference.columns[1:])
    return Table(columns, tuple({column: row[column] for column in columns} for row in rows))


def format_interval_number(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:.4f}"
    return "0.0000" if text == "-0.0000" else text


def interval_table(table: Table, spec: TableSpec, evaluated: Evaluated) -> Table:
    """``<name>-intervals.csv``: every regenerated cell of ``table`` with its uncertainty; rows in
    the table's order, then split, then metric in the table's column order."""
    by_label = {row.label: row for row in spec.rows}
    shown = [metric_column(c) for c in table.columns if metric_column(c)]
    full = spec.full_row
    cells: dict[tuple[str, str], dict[str, CellInterval]] = {}
    for split in spec.splits:
        indices = None
        for row in spec.rows:
            evaluations = evaluated[row.label, split]
            if indices is None:  # one draw per split: every row and seed uses the same resamples
                indices = resample_indices(len(evaluations.samples[0]))
            paired = evaluated[full.label, split] if full is not None and row is not full else None
            cells[row.label, split] = row_intervals(evaluations, indices, paired)
    lines = []
    for table_row in table.rows:
        label = table_row[table.key]
        if table_row[SOURCE] == PAPER or label not in by_label:
            continue
        for split in spec.splits:
            for metric, column_split in shown:
                if (column_split or spec.split) != split:
                    continue
                lines.append(_interval_line(label, split, metric, cells[label, split][metric]))
    return Table(INTERVAL_COLUMNS, tuple(lines))


def _interval_line(label: str, split: str, metric: str, cell: CellInterval) -> dict[str, str]:
    return {"label": label, "split": split, "metric": metric, **interval_fields(cell)}


def interval_fields(cell: CellInterval) -> dict[str, str]:
    """The columns every intervals CSV shares (tables, studies): mean, std, seeds, samples, the
    95 % interval, and the delta against the reference row with its interval and ``resolved``."""
    delta = cell.delta
    return {
        "mean": format_interval_number(cell.mean),
        "std": format_interval_number(cell.std),
        "seeds": str(cell.seeds),
        "samples": str(cell.samples),
        "ci_low": format_interval_number(cell.low),
        "ci_high": format_interval_number(cell.high),
        "delta": format_interval_number(None if delta is None else delta.value),
        "delta_ci_low": format_interval_number(None if delta is None else delta.low),
        "delta_ci_high": format_interval_number(None if delta is None else delta.high),
        "resolved": "" if delta is None else ("yes" if delta.resolved else "no"),
    }


def collect_evaluations(
    specs: dict[str, TableSpec], metrics_dir: Path, seeds: SeedsOf
) -> dict[str, Evaluated]:
    """Every table's rows on every split it shows, all seeds; missing files are listed together."""
    missing = [
        str(path)
        for json_path in required_metrics(specs, metrics_dir, seeds)
        for path in (json_path, json_path.with_suffix(".csv"))
        if not path.exists()
    ]
    if missing:
        raise DataError(
            f"{len(missing)} metrics file(s) missing; run `diffris evaluate` for:\n  " + "\n  ".join(missing)
        )
    return {
        name: {
            (row.label, split): read_row(spec, row, split, metrics_dir, seeds)
            for row in spec.rows
            for split in spec.splits
        }
        for name, spec in specs.items()
    }


def build_report(
    params: dict, reference_dir: Path, metrics_dir: Path, scale: str | None = None
) -> tuple[dict[str, Table], dict[str, Table]]:
    """Every table of params.yaml ``tables`` (in ``TABLE_NAMES`` order) and its intervals table
    (``<name>-intervals``), from the evaluations of every seed of ``scale`` (default: params')."""
    from diffris.config import seeds

    every = table_specs(params)
    specs = {name: every[name] for name in TABLE_NAMES if name in every}
    scale = scale or params["scale"]
    evaluated = collect_evaluations(specs, metrics_dir, lambda experiment: seeds(params, scale, experiment))
    tables, intervals = {}, {}
    for name, spec in specs.items():
        tables[name] = build_table(read_table(Path(reference_dir) / f"{name}.csv"), spec, evaluated[name])
        intervals[f"{name}{INTERVALS_SUFFIX}"] = interval_table(tables[name], spec, evaluated[name])
    return tables, intervals


def build_tables(params: dict, reference_dir: Path, metrics_dir: Path, scale: str | None = None) -> dict[str, Table]:
    """The tables of ``build_report`` alone."""
    return build_report(params, reference_dir, metrics_dir, scale)[0]


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
