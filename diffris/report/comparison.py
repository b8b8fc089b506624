"""``comparison.md``: every regenerated cell against the paper's, with its delta and uncertainty.

Per table, every cell of every regenerated row: the paper's value, ours (the mean over seeds,
± their standard deviation where several seeds ran), its 95 % bootstrap interval and the delta
to the paper. Then, per row against the full model's row: the paper's delta, ours with its
paired-bootstrap interval, and whether the paper's delta could be resolved at this scale (it is
larger than half the width of our interval) or lies within the noise. The intervals come from
``tables/<name>-intervals.csv`` (``diffris.report.intervals``).

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
from diffris.report.intervals import CONFIDENCE, RESAMPLES
from diffris.report.table_csv import PAPER, Table, metric_column, read_table
from diffris.report.tables import INTERVALS_SUFFIX, TableSpec, table_specs

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


RESOLVABLE, WITHIN_NOISE = "resolvable", "within noise at this scale"


@dataclass(frozen=True)
class Cell:
    """One metric of one row on one split: the paper's value, the regenerated one (text) and the
    regenerated cell's line of ``<name>-intervals.csv``."""

    label: str
    metric: str
    split: str
    paper: str
    regenerated: str
    interval: dict[str, str]

    @property
    def delta(self) -> float | None:
        return difference(self.regenerated, self.paper)


def difference(a: str, b: str) -> float | None:
    """``a - b`` of two table cells, rounded to their two decimals; None if either is empty."""
    if not a or not b:
        return None
    return round(float(a) - float(b), 2) + 0.0  # + 0.0: no "-0.00"


def format_delta(delta: float | None) -> str:
    return MISSING if delta is None else f"{delta:+.2f}"


def format_regenerated(cell: Cell) -> str:
    """The mean over seeds, with ± their standard deviation where several seeds ran."""
    if not cell.regenerated:
        return MISSING
    std = cell.interval["std"]
    return f"{cell.regenerated} ± {float(std):.2f}" if std else cell.regenerated


def format_interval(low: str, high: str, signed: bool = False) -> str:
    form = "{:+.2f}" if signed else "{:.2f}"
    return f"[{form.format(float(low))}, {form.format(float(high))}]"


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


def read_intervals(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """``<name>-intervals.csv`` by (label, split, metric)."""
    return {(row["label"], row["split"], row["metric"]): row for row in read_table(path).rows}


def table_cells(path: Path, table: Table, spec: TableSpec, intervals: dict) -> list[Cell]:
    """Cells of every regenerated row of one table, row by row, metric by metric, split by split."""
    cells = []
    for row_spec in spec.rows:
        paper = {} if row_spec.control else table.row(row_spec.label, PAPER)
        regenerated = table.row(row_spec.label, row_spec.source)
        if paper is None or regenerated is None:
            kind = "control" if row_spec.control else "paper and regenerated"
            raise DataError(f"{path}: no {kind} row {row_spec.label!r}; run `diffris report-tables`")
        for column in table.columns:
            metric = metric_column(column)
            if metric is not None:
                split = metric[1] or spec.split or ""
                interval = intervals.get((row_spec.label, split, metric[0]))
                if interval is None:
                    raise DataError(
                        f"{path.with_name(path.stem + INTERVALS_SUFFIX + '.csv')}: no line for "
                        f"{row_spec.label!r} {split} {metric[0]}; run `diffris report-tables`"
                    )
                cells.append(Cell(row_spec.label, metric[0], split, paper.get(column, ""), regenerated[column], interval))
    return cells


def row_names(spec: TableSpec) -> dict[str, str]:
    """label -> the experiment column's text (``full (shuffled)`` for the shuffled control)."""
    return {row.label: row.experiment + (" (shuffled)" if row.shuffled else "") for row in spec.rows}


def cells_markdown(cells: list[Cell], key: str, spec: TableSpec) -> str:
    """One line per (row, metric); paper, regenerated, its interval and delta per split."""
    experiments = row_names(spec)
    splits = list(dict.fromkeys(cell.split for cell in cells))
    by_line: dict[tuple[str, str], dict[str, Cell]] = {}
    for cell in cells:
        by_line.setdefault((cell.label, cell.metric), {})[cell.split] = cell
    headers = [key, "experiment", "metric"]
    for split in splits:
        headers += [f"paper {split}", f"regenerated {split}", f"95 % CI {split}", f"Δ {split}"]
    lines = []
    for (label, metric), per_split in by_line.items():
        line = [label, experiments[label], metric]
        for split in splits:
            cell = per_split[split]
            interval = format_interval(cell.interval["ci_low"], cell.interval["ci_high"])
            line += [cell.paper or MISSING, format_regenerated(cell), interval, format_delta(cell.delta)]
        lines.append(line)
    return _markdown(lines, headers, text_columns=3)


@dataclass(frozen=True)
class Ablation:
    """One row's delta against the full model's row on one metric: the paper's and ours."""

    label: str
    metric: str
    split: str
    paper_delta: float | None
    delta: float
    low: float
    high: float
    resolved: bool

    @property
    def verdict(self) -> str:
        """Could the paper's delta be seen at this scale: larger than our interval's half-width?"""
        if self.paper_delta is None:
            return MISSING
        return RESOLVABLE if abs(self.paper_delta) > (self.high - self.low) / 2 else WITHIN_NOISE


def ablations(cells: list[Cell], spec: TableSpec) -> list[Ablation]:
    """Every row but the full model's against it, metric by metric (empty without a full row)."""
    full = spec.full_row
    if full is None:
        return []
    papers = {(c.split, c.metric): c.paper for c in cells if c.label == full.label}
    found = []
    for cell in cells:
        interval = cell.interval
        if cell.label == full.label or not interval["delta"]:
            continue
        found.append(Ablation(
            cell.label, cell.metric, cell.split, difference(cell.paper, papers[cell.split, cell.metric]),
            float(interval["delta"]), float(interval["delta_ci_low"]), float(interval["delta_ci_high"]),
            interval["resolved"] == "yes",
        ))  # fmt: skip
    order = [row.label for row in spec.rows]
    return sorted(found, key=lambda a: (order.index(a.label), spec.splits.index(a.split)))  # stable: metrics stay in order


def ablations_markdown(found: list[Ablation], key: str, spec: TableSpec) -> str:
    experiments = row_names(spec)
    headers = [key, "experiment", "split", "metric", "paper Δ", "our Δ", "95 % CI (paired)", "ours resolved", "paper's Δ"]
    lines = [
        [a.label, experiments[a.label], a.split, a.metric, format_delta(a.paper_delta), format_delta(a.delta),
         format_interval(str(a.low), str(a.high), signed=True), "yes" if a.resolved else "no", a.verdict]
        for a in found
    ]  # fmt: skip
    return _markdown(lines, headers, text_columns=4)


def summary_line(name: str, spec: TableSpec, cells: list[Cell], dataset_name: str) -> list[str]:
    deltas = [cell.delta for cell in cells if cell.delta is not None]
    mean = sum(deltas) / len(deltas) if deltas else None
    mean_abs = sum(abs(d) for d in deltas) / len(deltas) if deltas else None
    judged = [a for a in ablations(cells, spec) if a.paper_delta is not None]
    resolvable = sum(a.verdict == RESOLVABLE for a in judged)
    return [
        TITLES.get(name, name).split(" — ")[0],
        dataset_name,
        ", ".join(spec.splits),
        str(len(deltas)),
        format_delta(None if mean is None else round(mean, 2) + 0.0),
        MISSING if mean_abs is None else f"{mean_abs:.2f}",
        f"{resolvable} of {len(judged)}" if judged else MISSING,
    ]


def _markdown(lines: list[list[str]], headers: list[str], text_columns: int) -> str:
    """A Markdown table; the first ``text_columns`` columns left-aligned, the numbers right-aligned."""
    align = ["left"] * text_columns + ["right"] * (len(headers) - text_columns)
    return tabulate(lines, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def header(scale: str, reasons: list[str], seeds_text: str) -> list[str]:
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
        f"Uncertainty ({seeds_text}): *regenerated* is the mean over seeds, ± the standard deviation over "
        f"seeds where several ran. *{round(100 * CONFIDENCE)} % CI* is a percentile bootstrap over the "
        f"split's samples ({RESAMPLES} resamples; each resample is used for every seed, whose metrics "
        "are averaged). Against the full model, *our Δ* has a paired bootstrap interval (the same "
        "resamples for both rows) and is *resolved* when that interval excludes 0. The paper's Δ is "
        f"*{RESOLVABLE}* when it is larger than half the width of our interval, otherwise it is "
        f"*{WITHIN_NOISE}*: this scale could not have told it from noise. Per table: "
        "`tables/<name>-intervals.csv`.",
        "",
    ]
    return out


def render_comparison(tables_dir: Path, params: dict, scale: str) -> str:
    """The whole page, from the tables written by ``diffris report-tables``."""
    specs = table_specs(params)
    names = [name for name in TITLES if name in specs]
    sections, summary = [], []
    samples = set()
    for name in names:
        spec = specs[name]
        path = Path(tables_dir) / f"{name}.csv"
        table = read_table(path)
        intervals = read_intervals(Path(tables_dir) / f"{name}{INTERVALS_SUFFIX}.csv")
        dataset_name = params["datasets"][spec.dataset]["name"]
        cells = table_cells(path, table, spec, intervals)
        samples |= {(dataset_name, c.split, c.interval["samples"], c.interval["seeds"]) for c in cells}
        summary.append(summary_line(name, spec, cells, dataset_name))
        title = f"## {TITLES[name]} ({dataset_name}, {' and '.join(spec.splits)})"
        sections += [title, "", cells_markdown(cells, table.key, spec), ""]
        found = ablations(cells, spec)
        if found:
            full = spec.full_row.label
            sections += [f"Against the full model ({full!r}):", "", ablations_markdown(found, table.key, spec), ""]
    summary_headers = ["table", "dataset", "splits", "cells", "mean Δ", "mean abs(Δ)", "paper Δ resolvable"]
    seed_counts = sorted({int(seeds) for *_, seeds in samples})
    sizes = ", ".join(f"{d} {split} {n}" for d, split, n in sorted({s[:3] for s in samples}))
    seeds_text = f"{'/'.join(map(str, seed_counts))} seed(s) per run; samples per split: {sizes}"
    out = header(scale, not_comparable_reasons(params, scale), seeds_text)
    out += ["## Summary", "", _markdown(summary, summary_headers, text_columns=3), "", *sections]
    return "\n".join(out)


GROUNDING_COLUMNS = {  # measure-grounding's column -> its header here
    "ranking": "caption ranking (%)",
    "attention_iou": "attention IoU",
    "gap_shuffled_t750_1000": "shuffled-caption gap, t ≥ 750 (%)",
    "feature_shift_t1": "feature shift (%)",
}


def grounding_markdown(grounding: Path, tables_dir: Path, params: dict, scale: str) -> list[str]:
    """Fig. 8's rows with their backbone's grounding (``diffris measure-grounding``) beside the
    regenerated oIoU and mIoU: does segmentation follow the backbone's grounding?"""
    import csv

    from diffris.models.config import config_from_params

    with open(grounding, newline="") as f:
        measured = {row["backbone"]: row for row in csv.DictReader(f)}
    spec, table = table_specs(params)["fig8"], read_table(Path(tables_dir) / "fig8.csv")
    cells = {row[table.key]: row for row in table.rows if row["source"] != PAPER}
    lines = []
    for row in spec.rows:
        backbone = config_from_params(params, row.experiment, scale).backbone
        if backbone not in measured:
            raise DataError(f"{grounding}: no row for backbone {backbone!r} (Fig. 8's {row.label!r})")
        values = [measured[backbone][c] for c in GROUNDING_COLUMNS]
        lines.append([row.label, backbone, cells[row.label]["oIoU"], cells[row.label]["mIoU"], *values])
    headers = ["Fig. 8 row", "backbone", "oIoU", "mIoU", *GROUNDING_COLUMNS.values()]
    return [
        "## Fig. 8 with the backbones' grounding",
        "",
        f"From `{grounding.name}` (`diffris measure-grounding`, held-out captioned scenes; docs/pretraining.md).",
        "",
        _markdown(lines, headers, text_columns=2),
        "",
    ]


def write_comparison(tables_dir: Path, params: dict, scale: str, out: Path, grounding: Path | None = None) -> str:
    text = render_comparison(tables_dir, params, scale)
    if grounding is not None:
        text += "\n" + "\n".join(grounding_markdown(grounding, tables_dir, params, scale))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text
