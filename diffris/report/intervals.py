"""The uncertainty of every regenerated number: spread over seeds and bootstrap intervals over samples.

A cell of a regenerated table is one metric of one run on one split, averaged over the scale's
seeds. Its uncertainty has two parts, both computed here from the per-sample CSVs that
``diffris evaluate`` writes (``index,id,expression,I,U,IoU``, one row per sample):

- **seeds**: the standard deviation of the metric over seeds (``ddof=1``; none with one seed);
- **samples and seeds**: a 95 % percentile bootstrap interval over the split's samples that also
  carries the seed noise. Each of ``RESAMPLES`` replicates draws ``n`` sample indices with
  replacement, once, and uses the same indices for every seed: it computes the metric of each
  seed on the resample and averages over seeds. Each replicate then gets a normal draw of the
  seed variance of the cell's mean, s²/n_seeds, where s² is the seed variance measured on the row
  (and, for a row compared with the full model, pooled with the full row's seeds: a row trained
  once takes the full model's). The interval is the 2.5th and 97.5th percentile of the replicates
  (numpy's linear interpolation). So a rerun on another CPU, whose training noise is that of
  another seed, is judged against the noise that is there (``diffris check-results``).

A row's **delta** against the full model's row (``metric(row) − metric(full)``) gets a paired
bootstrap interval: the same resampled indices for both rows, which must therefore hold the same
samples in the same order (checked). Where one of the two rows ran several seeds, the interval
also carries the seed noise: the seed variance s² of one run (pooled over the two rows' seeds,
ddof=1) gives the delta a variance s²·(1/n_row + 1/n_full), and each bootstrap replicate of the
delta gets an independent normal draw of that variance (``default_rng(SEED_NOISE_SEED)``) before
the percentiles are taken. This assumes every variant has the full model's seed variance; without
it, a row trained once would look resolved by a difference that another seed could undo. A
delta is ``resolved`` when its interval excludes 0.

The metrics on a resample follow ``diffris.training.metrics``: IoU = I/U per sample (0 when U = 0),
oIoU = ΣI/ΣU (0 when ΣU = 0), mIoU = mean IoU, Pr@X = share of samples with IoU ≥ X, all in
percent. The indices come from ``numpy.random.default_rng(BOOTSTRAP_SEED)`` and depend only on
the number of samples, so every table, row and seed of a split shares them and the output is
the same bytes on every run. Pure numpy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.errors import DataError
from diffris.training.metrics import METRIC_KEYS, PRECISION_THRESHOLDS, metrics_from_counts

RESAMPLES = 1000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
SEED_NOISE_SEED = 1
CSV_COLUMNS = ("index", "id", "expression", "I", "U", "IoU")
AGREEMENT = 5e-4  # points: a metrics JSON (4 decimals) and its per-sample CSV must agree to this


@dataclass(frozen=True)
class PerSample:
    """The per-sample I and U of one evaluation (one run, one seed, one split), in split order."""

    path: Path
    ids: tuple[str, ...]
    intersections: np.ndarray  # int64 [n]
    unions: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ious(self) -> np.ndarray:
        """IoU per sample as a fraction, 0 where the union is empty (``diffris.training.metrics.sample_iou``)."""
        safe = np.where(self.unions > 0, self.unions, 1)
        return np.where(self.unions > 0, self.intersections / safe, 0.0)

    def metrics(self) -> dict[str, float]:
        return metrics_from_counts(self.intersections.tolist(), self.unions.tolist())


def read_per_sample(path: Path) -> PerSample:
    """A per-sample CSV of ``diffris evaluate``; its rows must be samples 0..n-1 in order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run `diffris evaluate`")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: expected columns {', '.join(CSV_COLUMNS)}; lacks {', '.join(missing)}")
        ids, counts = [], []
        for position, row in enumerate(reader):
            try:
                index, i, u = int(row["index"]), int(row["I"]), int(row["U"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{reader.line_num}: index, I and U must be integers") from None
            if index != position or not 0 <= i <= u:
                raise DataError(f"{path}:{reader.line_num}: expected sample {position} with 0 <= I <= U")
            ids.append(row["id"])
            counts.append((i, u))
    if not ids:
        raise DataError(f"{path}: no samples")
    array = np.array(counts, dtype=np.int64)
    return PerSample(path, tuple(ids), array[:, 0], array[:, 1])


def check_agrees(samples: PerSample, metrics: dict[str, float], json_path: Path) -> None:
    """The metrics recomputed from the CSV equal those of its JSON (to the JSON's rounding)."""
    for key, value in samples.metrics().items():
        if abs(value - metrics[key]) > AGREEMENT:
            raise DataError(
                f"{samples.path} and {json_path} disagree on {key} ({value:.4f} vs {metrics[key]:.4f}); "
                "they come from different evaluations: run `diffris evaluate` again"
            )


def check_same_samples(groups: list[PerSample]) -> None:
    """Every evaluation holds the same samples in the same order (paired rows, seeds of a run)."""
    first = groups[0]
    for other in groups[1:]:
        if other.ids != first.ids:
            raise DataError(
                f"{other.path} and {first.path} hold different samples ({len(other)} and {len(first)}, "
                "or in another order): they cannot be paired; evaluate both runs on the same prepared split"
            )


def resample_indices(num_samples: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[resamples, num_samples]`` sample indices drawn with replacement; fixed for a given size."""
    return np.random.default_rng(seed).integers(0, num_samples, size=(resamples, num_samples))


def resampled_metrics(samples: PerSample, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric (percent) on each resample (one row of ``indices``): ``[resamples]`` per key."""
    n = indices.shape[1]
    ious = samples.ious[indices]
    total_i = samples.intersections[indices].sum(axis=1)
    total_u = samples.unions[indices].sum(axis=1)
    values = {f"Pr@{t}": 100.0 * (ious >= t).sum(axis=1) / n for t in PRECISION_THRESHOLDS}
    values["oIoU"] = np.where(total_u > 0, 100.0 * total_i / np.where(total_u > 0, total_u, 1), 0.0)
    values["mIoU"] = 100.0 * ious.sum(axis=1) / n
    return values


def seed_mean_replicates(per_seed: list[PerSample], indices: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample, computed per seed on the same indices and averaged over seeds."""
    check_same_samples(per_seed)
    runs = [resampled_metrics(samples, indices) for samples in per_seed]
    return {key: np.mean([values[key] for values in runs], axis=0) for key in METRIC_KEYS}


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    tail = round(50.0 * (1.0 - confidence), 10)  # 2.5, not 2.5000000000000022
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def seed_std(values: list[float]) -> float | None:
    """Standard deviation over seeds (ddof=1); None for one seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def pooled_seed_variance(*groups: list[float]) -> float:
    """The variance over seeds of one run, pooled over the groups that have several seeds (ddof=1);
    0 when none has."""
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if not dof:
        return 0.0
    return float(sum(np.var(g, ddof=1) * (len(g) - 1) for g in groups if len(g) > 1) / dof)


def seed_noise(variance: float, size: int) -> np.ndarray:
    """Normal draws of the delta's seed variance, one per bootstrap replicate (zeros without one)."""
    if variance <= 0:
        return np.zeros(size)
    return np.random.default_rng(SEED_NOISE_SEED).normal(0.0, np.sqrt(variance), size)


@dataclass(frozen=True)
class Delta:
    """A row's metric minus the full model's, with its paired 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the difference is larger than the sampling noise."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


@dataclass(frozen=True)
class CellInterval:
    """One cell: mean and spread over seeds, bootstrap interval over samples, delta to the full row."""

    mean: float
    std: float | None
    seeds: int
    samples: int
    low: float
    high: float
    delta: Delta | None = None


@dataclass(frozen=True)
class RowEvaluations:
    """One table row on one split: the metrics JSON values and per-sample CSV of each seed."""

    metrics: tuple[dict[str, float], ...]
    samples: tuple[PerSample, ...]


def row_intervals(
    row: RowEvaluations, indices: np.ndarray, full: RowEvaluations | None = None
) -> dict[str, CellInterval]:
    """Every metric of one row on one split; with ``full``, also its paired delta against it."""
    replicates = seed_mean_replicates(list(row.samples), indices)
    reference = None
    if full is not None:
        check_same_samples([full.samples[0], row.samples[0]])
        reference = seed_mean_replicates(list(full.samples), indices)
    cells = {}
    for key in METRIC_KEYS:
        values = [m[key] for m in row.metrics]
        mean = float(np.mean(values))
        delta = None
        base = [m[key] for m in full.metrics] if full is not None else []
        seed_variance = pooled_seed_variance(values, base)
        if reference is not None:
            variance = seed_variance * (1 / len(values) + 1 / len(base))
            paired = replicates[key] - reference[key] + seed_noise(variance, len(indices))
            delta = Delta(mean - float(np.mean(base)), *percentile_interval(paired))
        cell = replicates[key] + seed_noise(seed_variance / len(values), len(indices))
        cells[key] = CellInterval(mean, seed_std(values), len(values), len(row.samples[0]), *percentile_interval(cell), delta)
    return cells
