"""Figures 5-8 as PNGs that are byte-identical from one run to the next.

- Fig. 8: mIoU and oIoU against the Stable Diffusion version, from ``tables/fig8.csv``: the
  regenerated points as a line, the paper's points (those its text states) as squares, control
  rows (the random backbone) as crosses off the line.
- Figs. 5-7: one row per sample — expression, image, ground truth, DiffRIS prediction with its
  IoU — from the prediction PNGs and per-sample CSV of ``diffris evaluate`` and the prepared data.
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
from diffris.report.tables import CONTROL, PAPER, REGENERATED, Table, metrics_path, read_table, table_specs

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


def plot_fig8(table: Table, title: str) -> Figure:
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


def load_samples(spec: FigureSpec, metrics_dir: Path, data_dir: Path) -> list[Sample]:
    """The first ``spec.samples`` samples with a kept prediction, checked against the prepared split."""
    metrics_json = metrics_path(metrics_dir, spec.experiment, spec.dataset, spec.split)
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


def write_figures(
    params: dict, tables_dir: Path, metrics_dir: Path, data_dir: Path, out_dir: Path
) -> list[Path]:
    """fig5-7 (params.yaml ``figures``) and fig8 (``tables_dir/fig8.csv``) as ``out_dir/<name>.png``."""
    paths = []
    for spec in figure_specs(params).values():
        dataset = params["datasets"][spec.dataset]["name"]
        title = f"{spec.name}: {dataset} {spec.split}, experiment {spec.experiment}"
        paths.append(Path(out_dir) / f"{spec.name}.png")
        save_figure(plot_qualitative(load_samples(spec, metrics_dir, data_dir), title), paths[-1])
    fig8 = table_specs(params).get("fig8")
    if fig8 is not None:
        dataset = params["datasets"][fig8.dataset]["name"]
        title = f"fig8: DiffRIS with different Stable Diffusion weights ({dataset} {fig8.split})"
        paths.append(Path(out_dir) / "fig8.png")
        save_figure(plot_fig8(read_table(Path(tables_dir) / "fig8.csv"), title), paths[-1])
    return paths
