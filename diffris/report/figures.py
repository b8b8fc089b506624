"""Figures 5-8 as PNGs that are byte-identical from one run to the next.

- Fig. 8: mIoU and oIoU against the Stable Diffusion version, from ``tables/fig8.csv``: the
  regenerated points as a line with their 95 % bootstrap intervals (``fig8-intervals.csv``), the
  paper's points (those its text states) as squares, control rows (the random backbone) as
  crosses off the line.
- Figs. 5-7: one row per sample — expression, image, ground truth, DiffRIS prediction with its
  IoU — from the prediction PNGs and per-sample CSV of ``diffris evaluate`` (the run of the first
  seed, params.yaml ``seed``) and the prepared data.
  params.yaml ``figures.<name>`` names the dataset, split, experiment and number of samples; the
  samples are the first ones (by index) that the evaluation kept a prediction for.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend) and
saved without the software tag, so the bytes depend only on the data and library versions.
"""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from PIL import Image

from diffris.errors import ConfigError, DataError
from diffris.report.table_csv import PAPER, Table, read_table
from diffris.report.tables import CONTROL, INTERVALS_SUFFIX, REGENERATED, metrics_path, table_specs

DPI = 120
FIG8_METRICS = ("mIoU", "oIoU")
COLORS = {REGENERATED: "#1f77b4", PAPER: "#d62728", CONTROL: "#555555"}
COLUMN_TITLES = ("(a) Expression", "(b) Image", "(c) Ground truth", "(d) DiffRIS")


@dataclass(frozen=True)
class FigureSpec:
    """params.yaml ``figures.<name>``: a qualitative grid of one run on one split."""

    name: str
    dataset: str
    split: str
    experiment: str
    samples: int


@dataclass(frozen=True)
class Sample:
    index: int
    expression: str
    iou: float  # fraction
    image: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # bool [S, S]
    prediction: np.ndarray  # bool [S, S]


def figure_specs(params: dict) -> dict[str, FigureSpec]:
    """params.yaml ``figures``, checked against ``experiments``."""
    section = params.get("figures")
    if not section:
        raise ConfigError("params.yaml: no `figures` section")
    specs = {}
    for name, entry in section.items():
        if entry["experiment"] not in params.get("experiments", {}):
            raise ConfigError(
                f"params.yaml: figures.{name}: experiment {entry['experiment']!r} is not one of `experiments`"
            )
        specs[name] = FigureSpec(
            name, entry["dataset"], entry["split"], entry["experiment"], entry["samples"]
        )
    return specs


def save_figure(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


def fig8_frame(table: Table) -> pd.DataFrame:
    """Long form: backbone, position (x), source, metric, value; empty cells left out."""
    order = list(dict.fromkeys(row[table.key] for row in table.rows))
    records = [
        {
            "backbone": row[table.key],
            "position": order.index(row[table.key]),
            "source": row["source"],
            "metric": metric,
            "value": float(row[metric]),
        }
        for row in table.rows
        for metric in FIG8_METRICS
        if row[metric]
    ]
    return pd.DataFrame.from_records(records, columns=["backbone", "position", "source", "metric", "value"])


def interval_bars(intervals: Table | None, points: pd.DataFrame, metric: str) -> np.ndarray | None:
    """``[2, points]`` distances from each point down and up to its bootstrap interval, or None."""
    if intervals is None or points.empty:
        return None
    bounds = {(r["label"], r["metric"]): (float(r["ci_low"]), float(r["ci_high"])) for r in intervals.rows}
    missing = [b for b in points["backbone"] if (b, metric) not in bounds]
    if missing:
        raise DataError(f"fig8-intervals.csv: no {metric} interval for {', '.join(missing)}; run `diffris report-tables`")
    low = np.array([bounds[b, metric][0] for b in points["backbone"]])
    high = np.array([bounds[b, metric][1] for b in points["backbone"]])
    values = points["value"].to_numpy()
    return np.clip(np.stack([values - low, high - values]), 0.0, None)


def plot_fig8(table: Table, title: str, intervals: Table | None = None) -> Figure:
    """The regenerated points carry their 95 % bootstrap intervals when ``intervals`` is given."""
    frame = fig8_frame(table)
    order = list(dict.fromkeys(row[table.key] for row in table.rows))
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(1, len(FIG8_METRICS))
    for ax, metric in zip(axes, FIG8_METRICS, strict=True):
        data = frame[frame["metric"] == metric]
        regenerated, paper = data[data["source"] == REGENERATED], data[data["source"] == PAPER]
        sns.lineplot(
            data=regenerated,
            x="position",
            y="value",
            marker="o",
            color=COLORS[REGENERATED],
            label="regenerated",
            ax=ax,
        )
        sns.scatterplot(
            data=paper,
            x="position",
            y="value",
            marker="s",
            s=50,
            color=COLORS[PAPER],
            label="paper (stated in text)",
            ax=ax,
        )
        control = data[data["source"] == CONTROL]
        if not control.empty:  # not on the line: an untrained backbone is no SD version
            sns.scatterplot(
                data=control, x="position", y="value", marker="X", s=70, color=COLORS[CONTROL], label="control", ax=ax
            )
        for points, source in ((regenerated, REGENERATED), (control, CONTROL)):
            bars = interval_bars(intervals, points, metric)
            if bars is not None:
                ax.errorbar(points["position"], points["value"], yerr=bars, fmt="none", ecolor=COLORS[source], capsize=3)
        ax.set_xticks(range(len(order)), order)
        ax.set(title=metric, xlabel="Stable Diffusion version", ylabel=f"{metric} (%)")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return fig


def read_per_sample(path: Path) -> dict[int, dict[str, str]]:
    """The per-sample CSV of ``diffris evaluate``, by sample index."""
    if not path.exists():
        raise DataError(f"{path}: missing; run `diffris evaluate` first")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"index", "id", "expression", "IoU"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(
                f"{path}: expected columns index, id, expression, IoU; lacks {', '.join(sorted(missing))}"
            )
        return {int(row["index"]): row for row in reader}


def read_manifest_ids(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path}: missing; run `diffris prepare` first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["sample_id"] for line in f if line.strip()]


def load_samples(spec: FigureSpec, metrics_dir: Path, data_dir: Path, seed: int) -> list[Sample]:
    """The first ``spec.samples`` samples with a kept prediction of the run trained with ``seed``,
    checked against the prepared split."""
    metrics_json = metrics_path(metrics_dir, spec.experiment, spec.dataset, spec.split, seed)
    predictions = sorted(metrics_json.with_name(f"{spec.split}-predictions").glob("*.png"))
    if len(predictions) < spec.samples:
        raise DataError(
            f"{metrics_json.with_name(f'{spec.split}-predictions')}: {len(predictions)} prediction PNG(s), "
            f"figures.{spec.name} asks for {spec.samples}; evaluate with a larger --num-figures"
        )
    per_sample = read_per_sample(metrics_json.with_suffix(".csv"))
    split_dir = Path(data_dir) / spec.dataset / spec.split
    ids = read_manifest_ids(split_dir / "manifest.jsonl")
    images = np.load(split_dir / "images.npy", mmap_mode="r")
    masks = np.load(split_dir / "masks.npy", mmap_mode="r")
    return [_sample(png, per_sample, ids, images, masks, split_dir) for png in predictions[: spec.samples]]


def _sample(
    png: Path, per_sample: dict, ids: list[str], images: np.ndarray, masks: np.ndarray, split_dir: Path
) -> Sample:
    index = int(png.stem)
    row = per_sample.get(index)
    if row is None or index >= len(ids) or row["id"] != ids[index]:
        raise DataError(f"{png}: sample {index} of the evaluation is not sample {index} of {split_dir}")
    prediction = np.asarray(Image.open(png).convert("L")) > 127
    if prediction.shape != masks[index].shape:
        raise DataError(f"{png}: {prediction.shape} pixels, the prepared mask has {masks[index].shape}")
    return Sample(
        index,
        row["expression"],
        float(row["IoU"]),
        np.asarray(images[index]),
        np.asarray(masks[index]).astype(bool),
        prediction,
    )


def plot_qualitative(samples: list[Sample], title: str) -> Figure:
    """One row per sample: expression, image, ground truth, prediction with its IoU."""
    fig = Figure(figsize=(8, 2.1 * len(samples) + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(len(samples), len(COLUMN_TITLES), squeeze=False))
    for row, sample in zip(axes, samples, strict=True):
        row[0].text(0.0, 0.5, textwrap.fill(sample.expression, 26), va="center", ha="left", fontsize=9)
        row[1].imshow(sample.image, interpolation="nearest")
        row[2].imshow(sample.mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        row[3].imshow(sample.prediction, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        row[3].set_xlabel(f"IoU {100 * sample.iou:.2f}%")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].axis("off")
    for ax, column_title in zip(axes[0], COLUMN_TITLES, strict=True):
        ax.set_title(column_title, fontsize=10)
    fig.suptitle(title)
    return fig


DIAGNOSTICS = (("tokens_used", "tokens in use per image"), ("entropy", "assignment entropy / log M"),
               ("agreement", "training = clean assignment"), ("tau", "temperature tau"))


def assignment_frame(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Long form of the per-epoch PCMRD diagnostics: dataset, epoch, stage, diagnostic, value."""
    records = [
        {"dataset": dataset, "epoch": entry["epoch"], "stage": stage, "diagnostic": key, "value": entry[stage][key]}
        for dataset, history in histories.items()
        for entry in history
        for stage in sorted(k for k in entry if k.startswith("stage"))
        for key, _ in DIAGNOSTICS
    ]
    return pd.DataFrame.from_records(records)


def plot_assignment(histories: dict[str, list[dict]], title: str) -> Figure:
    """One panel per diagnostic, one line per (stage, dataset), over the training epochs."""
    fig = Figure(figsize=(13, 3.4))
    if not histories:  # no run of the figures has query tokens: nothing is assigned
        fig.text(0.5, 0.5, "no PCMRD query tokens in these runs", ha="center", va="center")
        fig.suptitle(title)
        return fig
    frame = assignment_frame(histories)
    for ax, (key, label) in zip(fig.subplots(1, len(DIAGNOSTICS)), DIAGNOSTICS, strict=True):
        part = frame[frame["diagnostic"] == key]
        sns.lineplot(data=part, x="epoch", y="value", hue="stage", style="dataset", marker="o", ax=ax, legend=key == "tau")
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def assignment_histories(params: dict, metrics_dir: Path, seed: int) -> dict[str, list[dict]]:
    """Per dataset of the qualitative figures, the training diagnostics that its evaluation JSON holds."""
    histories = {}
    for spec in figure_specs(params).values():
        path = metrics_path(metrics_dir, spec.experiment, spec.dataset, spec.split, seed)
        history = json.loads(path.read_text(encoding="utf-8")).get("training_assignment") if path.exists() else None
        if history:
            histories[params["datasets"][spec.dataset]["name"]] = history
    return histories


def write_figures(
    params: dict, tables_dir: Path, metrics_dir: Path, data_dir: Path, out_dir: Path
) -> list[Path]:
    """fig5-7 (params.yaml ``figures``: the first seed's run) and fig8 (``tables_dir/fig8.csv``, with
    the bootstrap intervals of ``fig8-intervals.csv``) as ``out_dir/<name>.png``."""
    paths = []
    seed = params["seed"]  # the first of the scale's seeds
    for spec in figure_specs(params).values():
        dataset = params["datasets"][spec.dataset]["name"]
        title = f"{spec.name}: {dataset} {spec.split}, experiment {spec.experiment}, seed {seed}"
        paths.append(Path(out_dir) / f"{spec.name}.png")
        save_figure(plot_qualitative(load_samples(spec, metrics_dir, data_dir, seed), title), paths[-1])
    fig8 = table_specs(params).get("fig8")
    if fig8 is not None:
        dataset = params["datasets"][fig8.dataset]["name"]
        title = f"fig8: DiffRIS with different Stable Diffusion weights ({dataset} {fig8.split}; bars: 95 % bootstrap)"
        paths.append(Path(out_dir) / "fig8.png")
        table, intervals = (read_table(Path(tables_dir) / f"fig8{kind}.csv") for kind in ("", INTERVALS_SUFFIX))
        save_figure(plot_fig8(table, title, intervals), paths[-1])
    paths.append(Path(out_dir) / "assignment.png")
    title = f"PCMRD assignment during training (the figures' runs, seed {seed}; docs/model.md)"
    save_figure(plot_assignment(assignment_histories(params, metrics_dir, seed), title), paths[-1])
    return paths
