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
from diffris.evaluation.evaluate import load_for_evaluation
from diffris.fileio import atomic_folder, check_out, write_json
from diffris.studies.corruptions import condition_name, corrupt
from diffris.training.validation import EvalResult, evaluate_model
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
    setup = load_for_evaluation(run, split, data, backbone_dir, batch_size)  # as `diffris evaluate`
    model, data = setup.model, setup.data
    base = PreparedSplit(data, split, pixels=False)
    summary: dict[str, dict[str, float]] = {}

    def write(folder: Path) -> None:
        for corruption, severity in tqdm(conditions(corruptions, severities), desc="conditions", unit="condition"):
            name = condition_name(corruption, severity)
            result = evaluate_model(model, CorruptedSplit(base, corruption, severity), **setup.settings)
            report = setup.report(split, len(base))
            report["condition"] = condition_record(corruption, severity)
            report["metrics"] = result.rounded_metrics()
            if result.assignment:
                report["assignment"] = result.assignment
            write_evaluation(folder, name, report, result)
            summary[name] = report["metrics"]
        write_json(folder / SUMMARY_FILE, {**setup.report(split, len(base)), "conditions": summary})

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
