"""The adverse-conditions study's table and figure, from ``diffris evaluate-corrupted`` folders.

Each folder is ``<anything>/<experiment>/<dataset>/seed<k>`` and holds ``clean`` and
``<corruption>-<severity>`` evaluations (JSON and per-sample CSV). The CSV has one line per
(experiment, dataset, condition, metric), columns ``COLUMNS``, four decimals, rows sorted by
experiment, dataset, condition (clean, then each corruption by severity, then the corruption's
summary, then ``all``) and metric:

- condition ``clean`` or ``<corruption>-<severity>``, metrics ``oIoU`` and ``mIoU``: the mean over
  seeds, their std, and the 95 % bootstrap interval over samples (``diffris.report.intervals``);
  a corrupted condition also has its paired delta against ``clean`` of the same runs (seed
  noise included, as in the tables' deltas) and whether its interval excludes 0.
- condition ``<corruption>``, metrics ``CE`` and ``relative_CE``; condition ``all``, metrics ``mCE``
  and ``relative_mCE``: the corruption errors of ImageNet-C (Hendrycks & Dietterich, 2019) on
  mIoU, against the ``--baseline`` experiment on the same dataset and samples::

      CE_c = 100 · Σ_s (100 − mIoU_{c,s}) / Σ_s (100 − mIoU^base_{c,s})          mCE = mean_c CE_c
      rCE_c = 100 · Σ_s (mIoU_clean − mIoU_{c,s}) / Σ_s (mIoU^base_clean − mIoU^base_{c,s})

  with each mIoU the mean over seeds. The baseline's CE and mCE are 100 by construction. Their
  interval is the percentile interval of the same statistic on each bootstrap replicate (the same
  resampled indices for every run and condition, seed-averaged as ``seed_mean_replicates`` does;
  sample noise only); their std is over the experiment's seeds (each seed against the baseline's
  seed mean); their delta is the value minus 100, i.e. against the baseline. A relative error is
  left empty where the baseline loses no mIoU under the corruption (a zero or negative
  denominator), and its interval where some replicate has one.

The figure plots mIoU against severity (0 = clean), one panel per dataset, one line per
experiment and corruption, with the bootstrap intervals as error bars.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from diffris.errors import DataError
from diffris.fileio import absolute, atomic_write, check_inputs, read_json
from diffris.report.figures import DPI
from diffris.report.intervals import (
    CellInterval,
    Delta,
    PerSample,
    RowEvaluations,
    check_agrees,
    check_same_samples,
    percentile_interval,
    read_per_sample,
    resample_indices,
    row_intervals,
    seed_mean_replicates,
    seed_std,
)
from diffris.report.table_csv import Table, write_table
from diffris.report.tables import format_interval_number
from diffris.studies.corruptions import CORRUPTIONS, SEVERITIES, condition_name

CLEAN, ALL = "clean", "all"
CONDITION_METRICS = ("oIoU", "mIoU")
CE_METRICS = ("CE", "relative_CE")
MCE_METRICS = ("mCE", "relative_mCE")
COLUMNS = (
    "experiment", "dataset", "condition", "metric", "mean", "std", "seeds", "samples", "ci_low", "ci_high",
    "delta", "delta_ci_low", "delta_ci_high", "resolved",
)  # fmt: skip
SEED_FOLDER = re.compile(r"seed(\d+)")
CONDITION_FILE = re.compile(rf"({'|'.join(CORRUPTIONS)})-(\d+)")
Condition = tuple[str | None, int | None]


@dataclass(frozen=True)
class Group:
    """Every seed of one experiment on one dataset: per condition, the seeds' evaluations."""

    experiment: str
    dataset: str
    folders: tuple[Path, ...]
    rows: dict[Condition, RowEvaluations]

    @property
    def corrupted(self) -> list[Condition]:
        return [c for c in self.rows if c[0] is not None]

    def seed_miou(self, condition: Condition) -> list[float]:
        return [m["mIoU"] for m in self.rows[condition].metrics]

    def mean_miou(self, condition: Condition) -> float:
        return float(np.mean(self.seed_miou(condition)))


# --- reading ---------------------------------------------------------------------------------


def folder_key(folder: Path) -> tuple[str, str, int]:
    """(experiment, dataset, seed) of ``.../<experiment>/<dataset>/seed<k>``."""
    path = absolute(folder)
    match = SEED_FOLDER.fullmatch(path.name)
    if match is None or len(path.parts) < 4:
        raise DataError(
            f"{folder}: expected a folder <experiment>/<dataset>/seed<k> written by `diffris evaluate-corrupted`"
        )
    return path.parent.parent.name, path.parent.name, int(match.group(1))


def folder_conditions(folder: Path) -> list[Condition]:
    """The conditions a folder holds (by its JSON files), clean first, then in corruption order."""
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: missing; run `diffris evaluate-corrupted`")
    found: list[Condition] = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.startswith(".") or path.stem == "summary":  # the folder's marker, the summary
            continue
        match = CONDITION_FILE.fullmatch(path.stem)
        if path.stem == CLEAN:
            found.append((None, None))
        elif match and int(match.group(2)) in SEVERITIES:
            found.append((match.group(1), int(match.group(2))))
        else:
            raise DataError(
                f"{path}: not an evaluation of `diffris evaluate-corrupted` (clean or <corruption>-<severity>)"
            )
    if (None, None) not in found:
        raise DataError(f"{Path(folder) / 'clean.json'}: missing; every folder needs the clean evaluation")
    return sorted(found, key=condition_rank)


def condition_rank(condition: Condition) -> tuple[int, int]:
    corruption, severity = condition
    return (-1, 0) if corruption is None else (list(CORRUPTIONS).index(corruption), severity)


def read_evaluation(folder: Path, condition: Condition) -> tuple[dict[str, float], PerSample]:
    """One condition's metrics (its JSON) and per-sample counts (its CSV), checked to agree."""
    json_path = Path(folder) / f"{condition_name(*condition)}.json"
    report = read_json(json_path, "the metrics JSON of `diffris evaluate-corrupted`")
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise DataError(f"{json_path}: no `metrics`; expected the metrics JSON of `diffris evaluate-corrupted`")
    samples = read_per_sample(json_path.with_suffix(".csv"))
    check_agrees(samples, report["metrics"], json_path)
    return report["metrics"], samples


def read_groups(folders: Iterable[Path]) -> dict[tuple[str, str], Group]:
    """The folders grouped by (experiment, dataset), seeds in order; every seed holds the same conditions."""
    by_key: dict[tuple[str, str], dict[int, Path]] = {}
    for folder in folders:
        experiment, dataset, seed = folder_key(folder)
        seeds = by_key.setdefault((experiment, dataset), {})
        if seed in seeds:
            raise DataError(f"{folder}: seed {seed} of {experiment}/{dataset} is also given as {seeds[seed]}")
        seeds[seed] = Path(folder)
    groups = {}
    for (experiment, dataset), seeds in sorted(by_key.items()):
        ordered = tuple(seeds[s] for s in sorted(seeds))
        conditions = folder_conditions(ordered[0])
        for other in ordered[1:]:
            if folder_conditions(other) != conditions:
                raise DataError(
                    f"{other} and {ordered[0]} hold different conditions; evaluate both with the same options"
                )
        rows = {}
        for condition in conditions:
            read = [read_evaluation(folder, condition) for folder in ordered]
            rows[condition] = RowEvaluations(tuple(m for m, _ in read), tuple(s for _, s in read))
        groups[experiment, dataset] = Group(experiment, dataset, ordered, rows)
    return groups


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One CSV line before formatting; ``low``/``high`` None where no interval is defined."""

    condition: str
    metric: str
    mean: float | None
    std: float | None
    seeds: int
    samples: int
    low: float | None
    high: float | None
    delta: Delta | None = None


def condition_lines(group: Group, indices: np.ndarray) -> list[Line]:
    """oIoU and mIoU of every condition; corrupted ones with their paired delta against clean."""
    clean = group.rows[None, None]
    lines = []
    for condition, row in group.rows.items():
        cells = row_intervals(row, indices, None if condition[0] is None else clean)
        for metric in CONDITION_METRICS:
            lines.append(cell_line(condition_name(*condition), metric, cells[metric]))
    return lines


def cell_line(condition: str, metric: str, cell: CellInterval) -> Line:
    return Line(condition, metric, cell.mean, cell.std, cell.seeds, cell.samples, cell.low, cell.high, cell.delta)


Values = dict[Condition, "np.ndarray | float"]  # mIoU per condition: one value, or one per replicate


def corruption_errors(miou: Values, base: Values, corruption: str, severities: list[int]) -> tuple:
    """(CE, relative CE) in percent of one corruption, elementwise over replicates; the relative
    one is NaN where the baseline's drop is not positive."""
    error = sum(100.0 - miou[corruption, s] for s in severities)
    base_error = sum(100.0 - base[corruption, s] for s in severities)
    if np.any(np.asarray(base_error) <= 0):
        raise DataError(f"the baseline's mIoU is 100 under every severity of {corruption}: its corruption error is 0")
    drop = sum(miou[None, None] - miou[corruption, s] for s in severities)
    base_drop = sum(base[None, None] - base[corruption, s] for s in severities)
    safe = np.where(np.asarray(base_drop) > 0, base_drop, np.nan)
    return 100.0 * error / base_error, 100.0 * drop / safe


def all_errors(miou: Values, base: Values, severities: dict[str, list[int]]) -> dict[tuple[str, str], np.ndarray]:
    """Every corruption's CE and relative CE, then mCE and relative mCE (their means), by (condition, metric)."""
    errors = {}
    for corruption, levels in severities.items():
        ce, relative = corruption_errors(miou, base, corruption, levels)
        errors[corruption, CE_METRICS[0]], errors[corruption, CE_METRICS[1]] = ce, relative
    for mce, ce in zip(MCE_METRICS, CE_METRICS, strict=True):
        errors[ALL, mce] = np.mean([errors[c, ce] for c in severities], axis=0)
    return errors


def error_lines(group: Group, baseline: Group, indices: np.ndarray) -> list[Line]:
    """CE and relative CE per corruption, mCE and relative mCE over them, against ``baseline``."""
    missing = [c for c in group.rows if c not in baseline.rows]
    if missing:
        raise DataError(
            f"{baseline.folders[0]}: no {condition_name(*missing[0])} evaluation, which {group.folders[0]} has; "
            "evaluate the baseline under the same conditions"
        )
    check_same_samples([baseline.rows[None, None].samples[0], group.rows[None, None].samples[0]])
    severities = {c: [s for k, s in group.corrupted if k == c] for c in dict.fromkeys(c for c, _ in group.corrupted)}
    base_point = {c: baseline.mean_miou(c) for c in group.rows}
    values = all_errors({c: group.mean_miou(c) for c in group.rows}, base_point, severities)
    draws = all_errors(replicate_miou(group, indices), replicate_miou(baseline, indices, group.rows), severities)
    per_seed = [  # each seed against the baseline's seed mean
        all_errors({c: group.seed_miou(c)[k] for c in group.rows}, base_point, severities)
        for k in range(len(group.folders))
    ]
    samples = len(group.rows[None, None].samples[0])
    return [
        error_line(condition, metric, values[condition, metric], draws[condition, metric],
                   [seed[condition, metric] for seed in per_seed], samples, group is baseline)  # fmt: skip
        for condition, metric in values
    ]


def replicate_miou(group: Group, indices: np.ndarray, conditions: Iterable[Condition] | None = None) -> Values:
    """mIoU of each condition on each bootstrap replicate, averaged over seeds."""
    return {c: seed_mean_replicates(list(group.rows[c].samples), indices)["mIoU"] for c in conditions or group.rows}


def error_line(
    condition: str, metric: str, value, draws: np.ndarray, seed_values: list, samples: int, is_baseline: bool
) -> Line:
    """A corruption error's line; its delta is against the baseline's 100 (none for the baseline)."""
    seeds, value = len(seed_values), float(value)
    if np.isnan(value):
        return Line(condition, metric, None, None, seeds, samples, None, None)
    low, high = (None, None) if np.any(np.isnan(draws)) else percentile_interval(draws)
    std = None if np.any(np.isnan(seed_values)) else seed_std([float(v) for v in seed_values])
    delta = None if is_baseline or low is None else Delta(value - 100.0, low - 100.0, high - 100.0)
    return Line(condition, metric, value, std, seeds, samples, low, high, delta)


# --- output ----------------------------------------------------------------------------------


def build_table(groups: dict[tuple[str, str], Group], baseline: str) -> Table:
    """Every line of the report (see the module docstring), in order."""
    rows = []
    for (experiment, dataset), group in sorted(groups.items()):
        base = groups.get((baseline, dataset))
        if base is None:
            raise DataError(
                f"--baseline {baseline}: no evaluations of {baseline!r} on {dataset} among --evaluations "
                f"(needed for the corruption errors of {experiment}/{dataset})"
            )
        indices = resample_indices(len(group.rows[None, None].samples[0]))  # depends only on the size
        for line in condition_lines(group, indices) + error_lines(group, base, indices):
            rows.append(format_line(experiment, dataset, line))
    return Table(COLUMNS, tuple(rows))


def format_line(experiment: str, dataset: str, line: Line) -> dict[str, str]:
    delta = line.delta
    return {
        "experiment": experiment,
        "dataset": dataset,
        "condition": line.condition,
        "metric": line.metric,
        "mean": format_interval_number(line.mean),
        "std": format_interval_number(line.std),
        "seeds": str(line.seeds),
        "samples": str(line.samples),
        "ci_low": format_interval_number(line.low),
        "ci_high": format_interval_number(line.high),
        "delta": format_interval_number(None if delta is None else delta.value),
        "delta_ci_low": format_interval_number(None if delta is None else delta.low),
        "delta_ci_high": format_interval_number(None if delta is None else delta.high),
        "resolved": "" if delta is None else ("yes" if delta.resolved else "no"),
    }


def plot_severity(table: Table) -> Figure:
    """mIoU against severity (0 = clean), a panel per dataset, a line per experiment and corruption."""
    datasets = list(dict.fromkeys(row["dataset"] for row in table.rows))
    experiments = list(dict.fromkeys(row["experiment"] for row in table.rows))
    miou = {(r["experiment"], r["dataset"], r["condition"]): r for r in table.rows if r["metric"] == "mIoU"}
    colors = dict(zip(CORRUPTIONS, sns.color_palette("colorblind", len(CORRUPTIONS))))
    styles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D", "v", "P")
    fig = Figure(figsize=(4.2 * len(datasets) + 2.4, 3.6), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])
    for ax, dataset in zip(axes, datasets, strict=True):
        for e, experiment in enumerate(experiments):
            clean = miou.get((experiment, dataset, CLEAN))
            if clean is None:
                continue
            offset = 0.06 * (e - (len(experiments) - 1) / 2)  # experiments side by side, bars apart
            for corruption in CORRUPTIONS:
                points = [(0, clean)] + [
                    (s, miou[experiment, dataset, f"{corruption}-{s}"])
                    for s in SEVERITIES
                    if (experiment, dataset, f"{corruption}-{s}") in miou
                ]
                if len(points) == 1:
                    continue
                x = np.array([s for s, _ in points]) + offset
                y = np.array([float(r["mean"]) for _, r in points])
                low = np.array([float(r["ci_low"]) for _, r in points])
                high = np.array([float(r["ci_high"]) for _, r in points])
                ax.errorbar(
                    x, y, yerr=np.clip(np.stack([y - low, high - y]), 0.0, None), color=colors[corruption],
                    linestyle=styles[e % len(styles)], marker=markers[e % len(markers)], markersize=4, capsize=2,
                    linewidth=1.2, label=f"{experiment} · {corruption}",
                )  # fmt: skip
        ax.set_xticks([0, *SEVERITIES], ["clean", *map(str, SEVERITIES)])
        ax.set(title=dataset, xlabel="severity", ylabel="mIoU (%)")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.suptitle("mIoU under adverse conditions (95 % bootstrap intervals)")
    return fig


def write_report(evaluations: list[Path], baseline: str, out: Path, figure: Path) -> Table:
    """Read the folders, write the CSV and the PNG (each atomically); returns the table."""
    for path, flag in ((out, "--out"), (figure, "--figure")):
        check_inputs(path, evaluations, flag)
    table = build_table(read_groups(evaluations), baseline)
    atomic_write(Path(out), lambda tmp: write_table(table, tmp))
    fig = plot_severity(table)
    atomic_write(Path(figure), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None}))
    return table
