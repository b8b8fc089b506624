"""A table as CSV: rows of string cells keyed by their first column, metric cells with two
decimals as in the paper (``diffris.report.tables`` builds them, the comparison and figures read
them)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from diffris.errors import DataError
from diffris.training.metrics import METRIC_KEYS

SPLITS = ("val", "test")
SOURCE = "source"
PAPER = "paper"


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
    return parse_table(Path(path).read_text(encoding="utf-8"), path)


def parse_table(text: str, source: str | Path) -> Table:
    """``read_table`` of a CSV's text; ``source`` names it in errors."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = tuple(reader.fieldnames or ())
    rows = tuple(_clean_row(row, source, reader.line_num) for row in reader)
    if not columns or not rows:
        raise DataError(f"{source}: expected a header and at least one row")
    return Table(columns, rows)


def _clean_row(row: dict[str, str | None], path: str | Path, line: int) -> dict[str, str]:
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
