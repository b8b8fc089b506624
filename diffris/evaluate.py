"""Evaluation of a trained run on a prepared split, the LAVT/RMSIN way (see ``diffris.metrics``).

One sample per expression; the prediction is the argmax of the two logits at the network
resolution, compared with the mask that ``prepare`` resized (nearest) to that resolution.

``evaluate_run`` writes, for ``--out results/.../test.json``:

- ``test.json``: metrics in percent (4 decimals), the run and checkpoint they come from (and, for a
  Hub backbone, its repository and commit);
- ``test.csv``: one row per sample in split order (index, id, expression, I, U, IoU);
- ``test-predictions/<index>.png``: predicted masks of a few samples picked by position only
  (evenly spaced over the split), so every run shows the same samples in the qualitative figures.

With ``shuffle_expressions`` each sample is paired with another sample's expression (a seeded
derangement) and the JSON holds both the shuffled and the unshuffled metrics: a model that reads
the text must lose accuracy.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from diffris.features.datasets import SwappedExpressions, model_inputs, open_split
from diffris.fileio import OutputError, check_inputs, write_json
from diffris.metrics import metrics_from_counts, sample_iou
from diffris.models.pcmrd import AssignmentMonitor
from diffris.run_folder import LOG_FILE, check_prepared, load_trained_model, mixed_precision, set_cpu_threads

DECIMALS = 4
NUM_FIGURES = 4


@dataclass
class EvalResult:
    """Per-sample I and U of one split, in split order, and the kept prediction masks."""

    indices: list[int] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    expressions: list[str] = field(default_factory=list)
    intersections: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)
    predictions: dict[int, np.ndarray] = field(default_factory=dict)
    assignment: dict[str, dict[str, float]] = field(default_factory=dict)  # PCMRD stages' diagnostics

    def metrics(self) -> dict[str, float]:
        return metrics_from_counts(self.intersections, self.unions)

    def rounded_metrics(self) -> dict[str, float]:
        return {key: round(value, DECIMALS) for key, value in self.metrics().items()}

    def write_csv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["index", "id", "expression", "I", "U", "IoU"])
            for row in zip(self.indices, self.sample_ids, self.expressions, self.intersections, self.unions):
                writer.writerow([*row, f"{sample_iou(row[3], row[4]):.6f}"])


def shuffled_sources(num_samples: int, seed: int) -> list[int]:
    """For each sample, the sample whose expression it gets: a seeded random cyclic derangement."""
    order = np.random.default_rng([seed, num_samples]).permutation(num_samples)
    sources = list(range(num_samples))
    for i, target in enumerate(order):
        sources[target] = int(order[(i + 1) % len(order)])
    return sources


def shuffled_expressions(expressions: list[str], seed: int) -> list[str]:
    """Each sample gets another sample's expression (``shuffled_sources``)."""
    return [expressions[j] for j in shuffled_sources(len(expressions), seed)]


def figure_indices(num_samples: int, count: int = NUM_FIGURES) -> list[int]:
    """Evenly spaced sample positions; the same for every run on the same split."""
    return sorted({int(i) for i in np.linspace(0, num_samples - 1, min(count, num_samples)).round()})


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    device: torch.device,
    keep: tuple[int, ...] = (),
    autocast: bool = False,
    memory_format: torch.memory_format | None = None,
) -> EvalResult:
    """Run ``model`` over ``dataset`` (prepared pixels or cached features, see
    ``diffris.features``) in order."""
    was_training = model.training
    model.eval()
    result = EvalResult()
    monitor = AssignmentMonitor(model)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda"
    )
    for batch in tqdm(loader, desc="evaluate", unit="batch", leave=False, dynamic_ncols=True):
        indices = batch["index"].tolist()
        texts = list(batch["expression"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(**model_inputs(model, batch, device, memory_format))
        monitor.update()
        pred = logits.argmax(dim=1) == 1  # foreground iff its logit is the larger (ties: background)
        gt = batch["mask"].to(device)
        result.intersections += (pred & gt).sum(dim=(1, 2)).tolist()
        result.unions += (pred | gt).sum(dim=(1, 2)).tolist()
        result.indices += indices
        result.sample_ids += list(batch["sample_id"])
        result.expressions += texts
        for row, index in enumerate(indices):
            if index in keep:
                result.predictions[index] = pred[row].cpu().numpy()
    result.assignment = monitor.read()
    model.train(was_training)
    return result


def evaluate_run(
    run: Path,
    split: str,
    out: Path,
    data: Path | None = None,
    backbone_dir: Path | None = None,
    features: Path | None = None,
    shuffle_expressions: bool = False,
    batch_size: int | None = None,
    num_figures: int = NUM_FIGURES,
) -> dict:
    """Evaluate a finished run on one split and write the JSON, CSV and prediction PNGs.

    With ``features`` (a cache of the run's dataset and backbone) the frozen passes are read from
    it; it is checked first and refused if it does not match."""
    check_eval_out(Path(out), [run, data, backbone_dir, features])
    model, config, info = load_trained_model(run, backbone_dir)
    train = config["train"]
    set_cpu_threads(train.get("cpu_threads", 0))
    data = Path(data or config["data"])
    check_prepared(data, config["dataset"], config["image_size"], split)
    dataset = open_split(data, split, model, features)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.backbone.use_fast_paths(train.get("channels_last", False), False, train.get("compile", False))
    settings = {
        "batch_size": batch_size or train["eval_batch_size"],
        "device": device,
        "keep": tuple(figure_indices(len(dataset), num_figures)),
        "autocast": mixed_precision(config["train"]["mixed_precision"]) == "bf16",
        "memory_format": torch.channels_last if train.get("channels_last") else None,
    }
    result = evaluate_model(model, dataset, **settings)
    report = _report(config, info, split, len(dataset), shuffle_expressions)
    if model.backbone.hub is not None:
        report["backbone"] = model.backbone.hub  # a Hub backbone's repository and resolved commit
    if shuffle_expressions:
        report["unshuffled_metrics"] = result.rounded_metrics()
        swapped = SwappedExpressions(dataset, shuffled_sources(len(dataset), config["seed"]))
        result = evaluate_model(model, swapped, **settings)
    report["metrics"] = result.rounded_metrics()
    if result.assignment:
        report["assignment"] = result.assignment  # PCMRD diagnostics at evaluation (docs/model.md)
        report["training_assignment"] = training_assignment(Path(run))
    _write_outputs(Path(out), report, result)
    return report


def training_assignment(run: Path) -> list[dict]:
    """The per-epoch PCMRD diagnostics that training logged (``log.jsonl``), oldest first."""
    path = run / LOG_FILE
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [{"epoch": r["epoch"], **r["assignment"]} for r in records if r.get("kind") == "epoch" and "assignment" in r]


def _report(config: dict, info: dict, split: str, num_samples: int, shuffled: bool) -> dict:
    return {
        "experiment": config["experiment"],
        "dataset": config["dataset"],
        "scale": config["scale"],
        "split": split,
        "num_samples": num_samples,
        "checkpoint": {key: info[key] for key in ("selected", "epoch", "global_step")},
        "shuffle_expressions": shuffled,
    }


CSV_HEADER = "index,id,expression,I,U,IoU"
PREDICTION_NAME = re.compile(r"\d{5}\.png|\.snakemake_timestamp")  # Snakemake marks directory() outputs


def check_eval_out(out: Path, inputs: list[Path | None]) -> None:
    """Refuse an ``--out`` whose JSON, CSV or predictions folder lies in an input or would
    overwrite something evaluate did not write (recognised by content: a metrics report, this
    CSV header, a folder of ``NNNNN.png`` predictions)."""
    folder = out.with_name(f"{out.stem}-predictions")
    for path in (out, out.with_suffix(".csv"), folder):
        check_inputs(path, inputs)
    if out.exists() and not _is_report(out):
        raise OutputError(f"--out {out}: exists and is not a metrics JSON of `diffris evaluate`; refusing to overwrite it")
    csv_path = out.with_suffix(".csv")
    if csv_path.exists() and (not csv_path.is_file() or _first_line(csv_path) != CSV_HEADER):
        raise OutputError(f"{csv_path}: exists and is not a per-sample CSV of `diffris evaluate`; refusing to overwrite it")
    if folder.exists():
        others = [p for p in folder.iterdir()] if folder.is_dir() else [folder]
        foreign = next((p for p in others if not PREDICTION_NAME.fullmatch(p.name) or not p.is_file()), None)
        if foreign is not None:
            raise OutputError(f"{foreign}: not a prediction of `diffris evaluate`; refusing to replace {folder}")


def _is_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(report, dict) and {"experiment", "dataset", "split", "metrics"} <= set(report)


def _first_line(path: Path) -> str:
    with open(path, errors="replace") as f:
        return f.readline().rstrip("\n")


def _write_outputs(out: Path, report: dict, result: EvalResult) -> None:
    write_json(out, report)
    result.write_csv(out.with_suffix(".csv"))
    folder = out.with_name(f"{out.stem}-predictions")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    for index, mask in sorted(result.predictions.items()):
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{index:05d}.png")
