"""Referring-segmentation metrics under the LAVT/RMSIN convention.

One sample is one (image, expression) pair. For each sample, I = |pred ∧ gt| and
U = |pred ∨ gt|; its IoU is I/U, and 0 when U = 0 (an empty prediction on an empty mask scores 0,
as in LAVT's ``test.py``). Over a split:

- ``oIoU`` = ΣI / ΣU (0 when ΣU = 0),
- ``mIoU`` = mean of the per-sample IoU,
- ``Pr@X`` = share of samples whose IoU is ≥ X, for X in 0.5, 0.6, 0.7, 0.8, 0.9,

all in percent. Predictions and masks are compared at the network resolution; resizing is the
caller's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import zip_longest

import numpy as np

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_KEYS = tuple(f"Pr@{t}" for t in PRECISION_THRESHOLDS) + ("oIoU", "mIoU")
_MISSING = object()


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """I and U of one boolean prediction against one boolean mask of the same shape."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.dtype != bool or gt.dtype != bool:
        raise TypeError(f"expected boolean arrays, got {pred.dtype} and {gt.dtype}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from mask shape {gt.shape}")
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def sample_iou(intersection: int, union: int) -> float:
    """Per-sample IoU as a fraction; 0 when the union is empty."""
    return intersection / union if union > 0 else 0.0


def metrics_from_counts(intersections: Sequence[int], unions: Sequence[int]) -> dict[str, float]:
    """oIoU, mIoU and Pr@X (percent) from the per-sample I and U of every sample."""
    if len(intersections) != len(unions):
        raise ValueError(f"{len(intersections)} intersections but {len(unions)} unions")
    if not intersections:
        raise ValueError("no samples to measure")
    ious = np.array([sample_iou(i, u) for i, u in zip(intersections, unions)])
    total_union = sum(unions)
    metrics = {f"Pr@{t}": 100.0 * float(np.mean(ious >= t)) for t in PRECISION_THRESHOLDS}
    metrics["oIoU"] = 100.0 * sum(intersections) / total_union if total_union > 0 else 0.0
    metrics["mIoU"] = 100.0 * float(np.mean(ious))
    return metrics


def compute_metrics(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> dict[str, float]:
    """Metrics over paired iterables of equally-shaped boolean arrays (one pair per sample).

    Returns the keys of ``METRIC_KEYS`` as floats in percent. Raises ValueError when the two
    iterables differ in length, a pair differs in shape, or there are no samples; TypeError when
    an array is not boolean.
    """
    counts = []
    for pred, gt in zip_longest(preds, gts, fillvalue=_MISSING):
        if pred is _MISSING or gt is _MISSING:
            raise ValueError("predictions and masks differ in number")
        counts.append(intersection_union(pred, gt))
    intersections = [i for i, _ in counts]
    unions = [u for _, u in counts]
    return metrics_from_counts(intersections, unions)
