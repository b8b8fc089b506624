"""``comparison.md``: every regenerated cell against the paper's, with its delta.

Whether the numbers can be compared with the paper's follows from the scale's settings, not its
name: synthetic data or a tiny generated backbone make them a pipeline check only, and the page
says so at the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from diffris.config import scale_params
from diffris.errors import DataError
from diffris.report.tables import (
    CONTROL,
    PAPER,
    REGENERATED,
    Table,
    TableSpec,
    metric_column,
    read_table,
    table_specs,
)

TITLES = {
    "table1": "Table 1 — comparison with the state of the art",
    "table2": "Table 2 — comparison with the state of the art",
    "table3": "Table 3 — comparison with the state of the art",
    "table4": "Table 4 — CP-adapter components",
    "table5": "Table 5 — decoders",
    "table6": "Table 6 — PCMRD components",
    "fig8": "Fig. 8 — Stable Diffusion version",
}
MISSING = "—"


@dataclass(frozen=True)
class Cell:
    """One metric of one row on one split: the paper's value and the regenerated one (text)."""

    label: str
    metric: str
    split: str
    paper: str
    regenerated: str

    @property
    def delta(self) -> float | None:
        if not self.paper or not self.regenerated:
            return None
        return round(float(self.regenerated) - float(self.paper), 2) + 0.0  # + 0.0: no "-0.00"


def format_delta(delta: float | None) -> str:
    return MISSING if delta is None else f"{delta:+.2f}"


def not_comparable_reasons(params: dict, scale: str) -> list[str]:
    """Why this scale's numbers cannot be set against the paper's (empty when they can)."""
    settings = scale_params(params, scale)
    reasons = []
    if settings["data_source"] == "synthetic":
        reasons.append("the datasets are small synthetic scenes, not RRSIS-D, RefSegRS and RISBench")
    backbones = params.get("backbones", {})
    tiny = ("tiny", "pretrained")
    if any(k in backbones.get(name, {}) for name in settings.get("backbones", {}).values() for k in tiny):
        reasons.append("the backbones are tiny generated stand-ins for Stable Diffusion")
    return reasons


def table_cells(path: Path, table: Table, spec: TableSpec) -> list[Cell]:
    """Cells of every regenerated row of one table, row by row, metric by metric, split by split."""
    cells = []
    for row_spec in spec.rows:
        paper = {} if row_spec.control else table.row(row_spec.label, PAPER)
        regenerated = table.row(row_spec.label, CONTROL if row_spec.control else REGENERATED)
        if paper is None or regenerated is None:
            kind = "control" if row_spec.control else "paper and regenerated"
            raise DataError(f"{path}: no {kind} row {row_spec.label!r}; run `diffris report-tables`")
        for column in table.columns:
            metric = metric_column(column)
            if metric is not None:
                split = metric[1] or spec.split or ""
                cells.append(Cell(row_spec.label, metric[0], split, paper.get(column, ""), regenerated[column]))
    return cells


def cells_markdown(cells: list[Cell], key: str, spec: TableSpec) -> str:
    """One line per (row, metric); paper, regenerated and delta per split."""
    experiments = {row.label: row.experiment for row in spec.rows}
    splits = list(dict.fromkeys(cell.split for cell in cells))
    by_line: dict[tuple[str, str], dict[str, Cell]] = {}
    for cell in cells:
        by_line.setdefault((cell.label, cell.metric), {})[cell.split] = cell
    headers = [key, "experiment", "metric"]
    for split in splits:
        headers += [f"paper {split}", f"regenerated {split}", f"Δ {split}"]
    lines = []
    for (label, metric), per_split in by_line.items():
        line = [label, experiments[label], metric]
        for split in splits:
            cell = per_split[split]
            line += [cell.paper or MISSING, cell.regenerated or MISSING, format_delta(cell.delta)]
        lines.append(line)
    return _markdown(lines, headers, text_columns=3)


def summary_line(name: str, spec: TableSpec, cells: list[Cell], dataset_name: str) -> list[str]:
    deltas = [cell.delta for cell in cells if cell.delta is not None]
    mean = sum(deltas) / len(deltas) if deltas else None
    mean_abs = sum(abs(d) for d in deltas) / len(deltas) if deltas else None
    return [
        TITLES.get(name, name).split(" — ")[0],
        dataset_name,
        ", ".join(spec.splits),
        str(len(deltas)),
        format_delta(None if mean is None else round(mean, 2) + 0.0),
        MISSING if mean_abs is None else f"{mean_abs:.2f}",
    ]


def _markdown(lines: list[list[str]], headers: list[str], text_columns: int) -> str:
    """A Markdown table; the first ``text_columns`` columns left-aligned, the numbers right-aligned."""
    align = ["left"] * text_columns + ["right"] * (len(headers) - text_columns)
    return tabulate(lines, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def header(scale: str, reasons: list[str]) -> list[str]:
    out = ["# Regenerated results against the paper", "", f"Scale: `{scale}`.", ""]
    if reasons:
        out += [
            "> **These numbers are not comparable to the paper.** At this scale "
            + "; ".join(reasons)
            + ". They are shown as a pipeline check: every table and figure is regenerated end to end "
            "by the same code as the `paper` scale. They say nothing about how well DiffRIS performs.",
            "",
        ]
    out += [
        "All numbers are percentages. Δ = regenerated − paper, in points; "
        f"{MISSING} where the paper gives no number (Fig. 8 plots SD-1-2 and SD-1-4 without stating them). "
        "The paper's Tables 4–6 print oIoU and mIoU swapped; both sides here follow Table 1 "
        "(see `results/reference/README.md`).",
        "",
    ]
    return out


def render_comparison(tables_dir: Path, params: dict, scale: str) -> str:
    """The whole page, from the tables written by ``diffris report-tables``."""
    specs = table_specs(params)
    names = [name for name in TITLES if name in specs]
    sections, summary = [], []
    for name in names:
        spec = specs[name]
        path = Path(tables_dir) / f"{name}.csv"
        table = read_table(path)
        dataset_name = params["datasets"][spec.dataset]["name"]
        cells = table_cells(path, table, spec)
        summary.append(summary_line(name, spec, cells, dataset_name))
        title = f"## {TITLES[name]} ({dataset_name}, {' and '.join(spec.splits)})"
        sections += [title, "", cells_markdown(cells, table.key, spec), ""]
    summary_headers = ["table", "dataset", "splits", "cells", "mean Δ", "mean abs(Δ)"]
    out = header(scale, not_comparable_reasons(params, scale))
    out += ["## Summary", "", _markdown(summary, summary_headers, text_columns=3), "", *sections]
    return "\n".join(out)


def write_comparison(tables_dir: Path, params: dict, scale: str, out: Path) -> str:
    text = render_comparison(tables_dir, params, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text
