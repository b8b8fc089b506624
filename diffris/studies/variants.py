"""The studies made of rows of experiments: Gumbel temperature, segmentation loss, order of the
ablations (params.yaml ``studies.{gumbel-tau,loss,order}``; docs/studies.md).

``results/<scale>/studies/<study>.csv`` has one line per (dataset, split, row, metric): the mean
over seeds, the seed spread and the 95 % bootstrap interval over samples, and the paired delta
against the study's ``reference`` row, all as in the tables' intervals (``diffris.report.intervals``).
A row lists the experiment it was trained as (``diffris.studies.plan.trained_as``).

Beside the metrics:

- rows of a PCMRD with query tokens add the assignment diagnostics of evaluation per stage
  (tokens in use, assignment entropy, tau; docs/model.md): mean and spread over seeds, without a
  bootstrap interval (evaluate records them over the whole split, not per sample);
- ``order`` (rows (off, baseline), (on, baseline), (off, full), (on, full)) adds three contrasts:
  the CP-adapter's gain under each decoder and their difference, the interaction. Each has a
  paired bootstrap interval over the same resamples, widened by the seed noise as a delta is
  (the pooled seed variance times Σ w²/n over the rows' weights w and seed counts n).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffris.errors import ConfigError
from diffris.report.intervals import (
    CellInterval,
    RowEvaluations,
    check_agrees,
    percentile_interval,
    pooled_seed_variance,
    read_per_sample,
    resample_indices,
    row_intervals,
    seed_mean_replicates,
    seed_noise,
)
from diffris.report.table_csv import Table, write_table
from diffris.report.tables import format_interval_number, interval_fields, metrics_path, read_metrics
from diffris.studies.plan import VARIANT_STUDIES, study_settings, trained_as, variant_evaluations
from diffris.training.metrics import METRIC_KEYS

if TYPE_CHECKING:  # pandas, seaborn and matplotlib load only to draw: the CLI's parser stays fast
    from matplotlib.figure import Figure

COLUMNS = (
    "dataset", "split", "label", "experiment", "metric", "mean", "std", "seeds", "samples",
    "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "resolved",
)  # fmt: skip
DIAGNOSTICS = ("tokens_used", "entropy", "tau")
ORDER_CONTRASTS = (  # label, weights over the rows (off, baseline), (on, baseline), (off, full), (on, full)
    ("CP-adapter gain, PCMRD baseline", (-1, 1, 0, 0)),
    ("CP-adapter gain, PCMRD full", (0, 0, -1, 1)),
    ("interaction: gain with full - gain with baseline", (1, -1, -1, 1)),
)


def read_evaluations(metrics_dir: Path, experiment: str, dataset: str, split: str, seeds: list[int]):
    """Every seed's metrics, per-sample CSV and assignment diagnostics of one evaluation."""
    metrics, samples, diagnostics = [], [], []
    for seed in seeds:
        path = metrics_path(metrics_dir, experiment, dataset, split, seed)
        metrics.append(read_metrics(path, experiment, dataset, split))
        samples.append(read_per_sample(path.with_suffix(".csv")))
        check_agrees(samples[-1], metrics[-1], path)
        diagnostics.append(json.loads(path.read_text(encoding="utf-8")).get("assignment") or {})
    return RowEvaluations(tuple(metrics), tuple(samples)), diagnostics


def _line(dataset: str, split: str, label: str, experiment: str, metric: str, **values) -> dict[str, str]:
    line = dict.fromkeys(COLUMNS, "")
    line.update(dataset=dataset, split=split, label=label, experiment=experiment, metric=metric)
    line.update({key: value if isinstance(value, str) else format_interval_number(value) for key, value in values.items()})
    return line


def _cell_line(dataset, split, label, experiment, metric, cell: CellInterval) -> dict[str, str]:
    return _line(dataset, split, label, experiment, metric, **interval_fields(cell))


def _diagnostic_lines(dataset, split, label, experiment, diagnostics: list[dict]) -> list[dict[str, str]]:
    lines = []
    for stage in sorted(diagnostics[0]):
        for key in DIAGNOSTICS:
            values = [d[stage][key] for d in diagnostics]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else None
            lines.append(_line(dataset, split, label, experiment, f"{stage} {key}", mean=float(np.mean(values)), std=std, seeds=str(len(values))))
    return lines


def contrast(rows: list[RowEvaluations], weights: tuple[int, ...], indices: np.ndarray, metric: str) -> tuple[float, float, float]:
    """Σ w·metric over ``rows`` (means over seeds) with its paired bootstrap interval and seed noise."""
    per_seed = [[m[metric] for m in row.metrics] for row in rows]
    value = sum(w * float(np.mean(values)) for w, values in zip(weights, per_seed, strict=True))
    replicates = sum(w * seed_mean_replicates(list(row.samples), indices)[metric] for w, row in zip(weights, rows, strict=True))
    variance = pooled_seed_variance(*per_seed) * sum(w * w / len(values) for w, values in zip(weights, per_seed, strict=True))
    return (value, *percentile_interval(replicates + seed_noise(variance, len(indices))))


def study_table(params: dict, scale: str, name: str, metrics_dir: Path) -> Table:
    """One study's lines: every row's metrics (and diagnostics) per evaluation, then any contrasts."""
    from diffris.config import seeds

    settings = study_settings(params, scale)
    if name not in settings:
        raise ConfigError(f"params.yaml: no study {name!r} under `studies`")
    study = settings[name]
    reference = trained_as(params, scale, study["reference"])
    lines = []
    for dataset, split in variant_evaluations(study):
        rows = {}
        for row in study["rows"]:
            experiment = trained_as(params, scale, row["experiment"])
            rows[row["label"]] = (experiment, *read_evaluations(metrics_dir, experiment, dataset, split, seeds(params, scale, experiment)))
        ref_eval = read_evaluations(metrics_dir, reference, dataset, split, seeds(params, scale, reference))[0]
        indices = resample_indices(len(ref_eval.samples[0]))
        for label, (experiment, evaluations, diag) in rows.items():
            paired = None if experiment == reference else ref_eval
            cells = row_intervals(evaluations, indices, paired)
            lines += [_cell_line(dataset, split, label, experiment, metric, cells[metric]) for metric in METRIC_KEYS]
            if diag and all(diag):
                lines += _diagnostic_lines(dataset, split, label, experiment, diag)
        if name == "order":
            ordered = [rows[row["label"]][1] for row in study["rows"]]
            for label, weights in ORDER_CONTRASTS:
                for metric in METRIC_KEYS:
                    value, low, high = contrast(ordered, weights, indices, metric)
                    resolved = "yes" if low > 0 or high < 0 else "no"
                    lines.append(_line(dataset, split, label, "", metric, delta=value, delta_ci_low=low, delta_ci_high=high, resolved=resolved))
    return Table(COLUMNS, tuple(lines))


def plot_study(table: Table, title: str) -> Figure:
    """mIoU and oIoU of every row with its interval, one panel per (dataset, split) and metric;
    the assignment's tokens in use per stage below, where the rows have them."""
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure

    frame = pd.DataFrame.from_records(table.rows)
    metrics = frame[frame["metric"].isin(["oIoU", "mIoU"]) & (frame["mean"] != "")]
    tokens = frame[frame["metric"].str.endswith(" tokens_used")]
    panels = list(dict.fromkeys(zip(metrics["dataset"], metrics["split"])))
    rows = 2 if len(tokens) else 1
    fig = Figure(figsize=(4.2 * 2 * len(panels), 3.6 * rows + 0.6), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = np.atleast_2d(fig.subplots(rows, 2 * len(panels), squeeze=False))
    for k, (dataset, split) in enumerate(panels):
        for j, metric in enumerate(("mIoU", "oIoU")):
            ax = axes[0, 2 * k + j]
            data = metrics[(metrics["dataset"] == dataset) & (metrics["split"] == split) & (metrics["metric"] == metric)]
            mean, low, high = (data[c].astype(float).to_numpy() for c in ("mean", "ci_low", "ci_high"))
            positions = np.arange(len(data))
            ax.errorbar(mean, positions, xerr=np.clip([mean - low, high - mean], 0, None), fmt="o", capsize=3)
            ax.set_yticks(positions, data["label"].tolist() if j == 0 else [""] * len(data))
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric} (%), 95 % interval")
            ax.set_title(f"{dataset} {split}")
        if rows == 2:
            ax = axes[1, 2 * k]
            data = tokens[(tokens["dataset"] == dataset) & (tokens["split"] == split)].copy()
            data["value"] = data["mean"].astype(float)
            data["stage"] = data["metric"].str.split().str[0]
            sns.barplot(data=data, y="label", x="value", hue="stage", ax=ax, orient="h")
            ax.set_xlabel("tokens in use (of the queries)")
            ax.set_ylabel("")
            ax.legend(title="PCMRD stage", bbox_to_anchor=(1.02, 1.0), loc="upper left")
            axes[1, 2 * k + 1].set_visible(False)
    fig.suptitle(title)
    return fig


STUDY_TITLES = {
    "gumbel-tau": "Gumbel temperature: tau_init, learnable or fixed",
    "loss": "Segmentation loss",
    "order": "Order of the ablations: CP-adapter x PCMRD",
}


def write_study(params: dict, scale: str, name: str, metrics_dir: Path, out_dir: Path) -> list[Path]:
    """``<out_dir>/<name>.csv`` and ``<name>.png`` of one rows-of-experiments study."""
    table = study_table(params, scale, name, metrics_dir)
    csv_path, png_path = Path(out_dir) / f"{name}.csv", Path(out_dir) / f"{name}.png"
    write_table(table, csv_path)
    from diffris.report.figures import save_figure

    save_figure(plot_study(table, f"{STUDY_TITLES[name]} ({scale})"), png_path)
    return [csv_path, png_path]


def register(sub) -> None:
    parser = sub.add_parser("report-study", help="a study of rows of experiments: its CSV with intervals, and its figure")
    parser.add_argument("--study", required=True, choices=VARIANT_STUDIES)
    parser.add_argument("--scale", help="default: params.yaml's `scale`")
    parser.add_argument("--metrics", required=True, type=Path, help="results/<scale>/metrics")
    parser.add_argument("--out", required=True, type=Path, help="folder for <study>.csv and <study>.png")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from diffris.config import load_params

    params = load_params()
    scale = args.scale or params["scale"]
    for path in write_study(params, scale, args.study, args.metrics, args.out):
        print(f"written: {path}")
    return 0
