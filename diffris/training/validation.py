"""Scoring a model on a split, the LAVT/RMSIN way (``diffris.training.metrics``): training's
validation (model selection on val) and ``diffris evaluate`` run this same loop.

One sample per expression; the prediction is the argmax of the two logits at the network
resolution, compared with the mask that ``prepare`` resized (nearest) to that resolution.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffris.features.datasets import model_inputs
from diffris.models.pcmrd import AssignmentMonitor
from diffris.training.metrics import metrics_from_counts, sample_iou

DECIMALS = 4


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
