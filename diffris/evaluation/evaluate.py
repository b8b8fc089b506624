"""Evaluation of a trained run on a prepared split, the LAVT/RMSIN way: the scoring loop is
training's validation (``diffris.training.validation``), run on a finished run.

``load_for_evaluation`` is the one set-up that ``diffris evaluate``, the corrupted evaluation and
the attention maps share: the run's model and selected weights, its threads, the prepared-data
check, the device and the scoring settings.

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

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffris.determinism import set_cpu_threads
from diffris.features.datasets import SwappedExpressions, open_split
from diffris.fileio import OutputError, check_inputs, write_json
from diffris.training.run_folder import LOG_FILE, check_prepared, load_trained_model, mixed_precision
from diffris.training.run_log import read_log
from diffris.training.validation import EvalResult, evaluate_model

NUM_FIGURES = 4


@dataclass
class EvalSetup:
    """A finished run loaded for evaluation; ``settings`` are ``evaluate_model``'s keyword
    arguments (batch size, device, bf16 autocast, memory format)."""

    model: torch.nn.Module
    config: dict
    info: dict
    data: Path
    settings: dict

    def report(self, split: str, num_samples: int, shuffled: bool = False) -> dict:
        """The head of a metrics JSON: what was evaluated, and with which checkpoint."""
        config = self.config
        report = {
            "experiment": config["experiment"],
            "dataset": config["dataset"],
            "scale": config["scale"],
            "split": split,
            "num_samples": num_samples,
            "checkpoint": {key: self.info[key] for key in ("selected", "epoch", "global_step")},
            "shuffle_expressions": shuffled,
        }
        if self.model.backbone.hub is not None:
            report["backbone"] = self.model.backbone.hub  # a Hub backbone's repository and resolved commit
        return report


def load_for_evaluation(
    run: Path,
    split: str,
    data: Path | None = None,
    backbone_dir: Path | None = None,
    batch_size: int | None = None,
    fast_paths: bool = True,
) -> EvalSetup:
    """A finished run's model with its selected weights on the device, its threads set, and its
    prepared ``split`` checked. ``fast_paths=False`` leaves the UNet as built (no channels-last,
    no compile), for code that hooks into its modules."""
    model, config, info = load_trained_model(run, backbone_dir)
    train = config["train"]
    set_cpu_threads(train.get("cpu_threads", 0))
    data = Path(data or config["data"])
    check_prepared(data, config["dataset"], config["image_size"], split)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if fast_paths:
        model.backbone.use_fast_paths(train.get("channels_last", False), False, train.get("compile", False))
    settings = {
        "batch_size": batch_size or train["eval_batch_size"],
        "device": device,
        "autocast": mixed_precision(train["mixed_precision"]) == "bf16",
        "memory_format": torch.channels_last if train.get("channels_last") and fast_paths else None,
    }
    return EvalSetup(model, config, info, data, settings)


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
    setup = load_for_evaluation(run, split, data, backbone_dir, batch_size)
    model = setup.model
    dataset = open_split(setup.data, split, model, features)
    settings = {**setup.settings, "keep": tuple(figure_indices(len(dataset), num_figures))}
    result = evaluate_model(model, dataset, **settings)
    report = setup.report(split, len(dataset), shuffle_expressions)
    if shuffle_expressions:
        report["unshuffled_metrics"] = result.rounded_metrics()
        swapped = SwappedExpressions(dataset, shuffled_sources(len(dataset), setup.config["seed"]))
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
    records = read_log(path)
    return [{"epoch": r["epoch"], **r["assignment"]} for r in records if r.get("kind") == "epoch" and "assignment" in r]


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
