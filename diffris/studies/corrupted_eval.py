"""A trained run evaluated, as it is, on a split under every corruption and severity
(``diffris.studies.corruptions``), and clean.

The model is loaded once, with the settings of ``diffris evaluate``; every condition runs live
(the corruption must reach the frozen backbone, so no feature cache), clean through the same path.
``--out DIR`` receives, per condition ``clean`` or ``<corruption>-<severity>``, the JSON and
per-sample CSV that ``diffris evaluate`` writes (the JSON also names the condition and its
parameters), and ``summary.json`` (every condition's metrics). The folder is written next to DIR
and moved into place when complete (``diffris.fileio.atomic_folder``): a DIR is never half done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffris.data.dataset import PreparedSplit, pixel_values
from diffris.evaluate import EvalResult, _report, evaluate_model
from diffris.fileio import atomic_folder, check_out, write_json
from diffris.run_folder import check_prepared, load_trained_model, mixed_precision, set_cpu_threads
from diffris.studies.corruptions import condition_name, corrupt
from diffris.studies.corruptions import parameters as corruption_parameters

COMMAND = "evaluate-corrupted"
SUMMARY_FILE = "summary.json"
Condition = tuple[str | None, int | None]  # (corruption, severity); (None, None) is clean


class CorruptedSplit(torch.utils.data.Dataset):
    """A prepared split whose images pass through one corruption before they become pixels."""

    def __init__(self, base: PreparedSplit, corruption: str | None = None, severity: int | None = None):
        self.base, self.corruption, self.severity = base, corruption, severity

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        image = np.array(self.base.images[i])
        if self.corruption is not None:
            image = corrupt(image, self.corruption, self.severity, i)
        item["pixel_values"] = pixel_values(image)
        return item


def conditions(corruptions: tuple[str, ...], severities: tuple[int, ...]) -> list[Condition]:
    """Clean first, then every corruption at every severity."""
    return [(None, None), *((c, s) for c in corruptions for s in severities)]


def evaluate_corrupted(
    run: Path,
    split: str,
    out: Path,
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    data: Path | None = None,
    backbone_dir: Path | None = None,
    batch_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``run`` on ``split`` clean and under each condition; returns each condition's metrics."""
    check_out(Path(out), COMMAND, [run, data, backbone_dir])
    model, config, info = load_trained_model(run, backbone_dir)
    train = config["train"]
    set_cpu_threads(train.get("cpu_threads", 0))
    data = Path(data or config["data"])
    check_prepared(data, config["dataset"], config["image_size"], split)
    base = PreparedSplit(data, split, pixels=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.backbone.use_fast_paths(train.get("channels_last", False), False, train.get("compile", False))
    settings = {  # as diffris.evaluate.evaluate_run, without prediction PNGs
        "batch_size": batch_size or train["eval_batch_size"],
        "device": device,
        "autocast": mixed_precision(train["mixed_precision"]) == "bf16",
        "memory_format": torch.channels_last if train.get("channels_last") else None,
    }
    summary: dict[str, dict[str, float]] = {}

    def write(folder: Path) -> None:
        for corruption, severity in tqdm(conditions(corruptions, severities), desc="conditions", unit="condition"):
            name = condition_name(corruption, severity)
            result = evaluate_model(model, CorruptedSplit(base, corruption, severity), **settings)
            report = _report(config, info, split, len(base), False)
            report["condition"] = condition_record(corruption, severity)
            if model.backbone.hub is not None:
                report["backbone"] = model.backbone.hub
            report["metrics"] = result.rounded_metrics()
            if result.assignment:
                report["assignment"] = result.assignment
            write_evaluation(folder, name, report, result)
            summary[name] = report["metrics"]
        write_json(folder / SUMMARY_FILE, {**_report(config, info, split, len(base), False), "conditions": summary})

    atomic_folder(Path(out), write, COMMAND, [run, data, backbone_dir])
    return summary


def condition_record(corruption: str | None, severity: int | None) -> dict:
    if corruption is None:
        return {"name": "clean"}
    return {
        "name": condition_name(corruption, severity),
        "corruption": corruption,
        "severity": severity,
        "parameters": corruption_parameters(corruption, severity),
    }


def write_evaluation(folder: Path, name: str, report: dict, result: EvalResult) -> None:
    """``<name>.json`` and ``<name>.csv`` as ``diffris evaluate`` writes them."""
    write_json(folder / f"{name}.json", report)
    result.write_csv(folder / f"{name}.csv")
