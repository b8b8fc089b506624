"""Bootstrap intervals and seed spread on hand-made cases whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffris.errors import DataError
from diffris.training.metrics import METRIC_KEYS, metrics_from_counts
from diffris.report.intervals import (
    pooled_seed_variance,
    RESAMPLES,
    PerSample,
    RowEvaluations,
    percentile_interval,
    read_per_sample,
    resample_indices,
    row_intervals,
    seed_mean_replicates,
    seed_std,
)
from report_fakes import write_per_sample


def samples(counts: list[tuple[int, int]], name: str = "a", ids: list[str] | None = None) -> PerSample:
    array = np.array(counts, dtype=np.int64)
    return PerSample(Path(f"{name}.csv"), tuple(ids or (f"s{i}" for i in range(len(counts)))), array[:, 0], array[:, 1])


def evaluations(*per_seed: PerSample) -> RowEvaluations:
    return RowEvaluations(tuple(s.metrics() for s in per_seed), per_seed)


def test_a_constant_iou_gives_a_zero_width_interval():
    row = evaluations(samples([(3, 4)] * 10))
    cells = row_intervals(row, resample_indices(10))
    assert (cells["mIoU"].low, cells["mIoU"].high) == (75.0, 75.0)
    assert (cells["oIoU"].low, cells["oIoU"].high) == (75.0, 75.0)
    assert (cells["Pr@0.7"].low, cells["Pr@0.7"].high) == (100.0, 100.0)
    assert (cells["Pr@0.8"].low, cells["Pr@0.8"].high) == (0.0, 0.0)
    assert cells["mIoU"].mean == 75.0 and cells["mIoU"].std is None and cells["mIoU"].seeds == 1


def test_the_interval_is_the_2_5th_and_97_5th_percentile():
    assert percentile_interval(np.arange(1001.0)) == (25.0, 975.0)  # linear interpolation, exact here
    assert percentile_interval(np.arange(101.0), confidence=0.9) == (5.0, 95.0)


def test_two_opposite_samples_span_the_whole_range():
    """IoU 0 and 1: a resample's mIoU is 0, 50 or 100 with odds 1:2:1, so 2.5 % and 97.5 % are 0 and 100."""
    cells = row_intervals(evaluations(samples([(0, 4), (4, 4)])), resample_indices(2))
    assert (cells["mIoU"].low, cells["mIoU"].high) == (0.0, 100.0)
    assert cells["mIoU"].mean == 50.0


def test_resampled_metrics_follow_the_metrics_module_sample_by_sample():
    """Each replicate equals `metrics_from_counts` on the resampled samples, averaged over seeds,
    including a sample with an empty union (IoU 0) and a resample with nothing but empty unions."""
    rng = np.random.default_rng(3)
    unions = rng.integers(0, 9, 12)
    seeds = [samples(list(zip(rng.integers(0, unions + 1).tolist(), unions.tolist()))) for _ in range(2)]
    seeds.append(samples([(0, 0)] * 12))
    indices = resample_indices(12, resamples=40)
    replicates = seed_mean_replicates(seeds, indices)
    for r, drawn in enumerate(indices):
        per_seed = [
            metrics_from_counts(s.intersections[drawn].tolist(), s.unions[drawn].tolist()) for s in seeds
        ]
        for key in METRIC_KEYS:
            assert replicates[key][r] == pytest.approx(np.mean([m[key] for m in per_seed]), abs=1e-9), (r, key)


def test_every_seed_is_measured_on_the_same_resample():
    """Seeds with opposite IoUs average to 50 on any resample drawn once for both: zero width.
    Drawn independently per seed, the interval would be wide."""
    row = evaluations(samples([(0, 4), (4, 4)] * 5), samples([(4, 4), (0, 4)] * 5))
    cells = row_intervals(row, resample_indices(10))
    assert (cells["mIoU"].low, cells["mIoU"].high) == (50.0, 50.0)
    assert cells["mIoU"].std == pytest.approx(0.0)


def test_the_seed_spread_is_the_sample_standard_deviation():
    assert seed_std([10.0, 20.0]) == pytest.approx(np.sqrt(50.0))
    assert seed_std([10.0, 20.0, 30.0]) == pytest.approx(10.0)
    assert seed_std([42.0]) is None


def test_a_row_paired_with_itself_has_a_zero_delta_and_a_zero_interval():
    rng = np.random.default_rng(0)
    unions = rng.integers(1, 9, 30)
    row = evaluations(samples(list(zip(rng.integers(0, unions + 1).tolist(), unions.tolist()))))
    for cell in row_intervals(row, resample_indices(30), full=row).values():
        assert (cell.delta.value, cell.delta.low, cell.delta.high) == (0.0, 0.0, 0.0)
        assert not cell.delta.resolved


def test_a_row_better_on_every_sample_is_resolved_though_the_rows_intervals_overlap():
    """Pairing removes the between-sample spread that the two rows share."""
    base = [(i, 20) for i in range(0, 20)]
    better = [(i + 1, 20) for i in range(0, 20)]
    indices = resample_indices(20)
    cells = row_intervals(evaluations(samples(better, "b")), indices, full=evaluations(samples(base)))
    full = row_intervals(evaluations(samples(base)), indices)
    assert cells["mIoU"].delta.value == pytest.approx(5.0)
    assert (cells["mIoU"].delta.low, cells["mIoU"].delta.high) == pytest.approx((5.0, 5.0))
    assert cells["mIoU"].delta.resolved and cells["mIoU"].low < full["mIoU"].high


def test_seed_noise_widens_a_delta_that_one_seed_would_call_resolved():
    """The row beats the full model on every sample, but the full model's three seeds spread by
    ±5 points: the delta of a once-trained row is no longer resolved."""
    base = [(i, 20) for i in range(0, 20)]
    better = [(i + 1, 20) for i in range(0, 20)]
    spread = [[(min(i + k, 20), 20) for i in range(0, 20)] for k in (-2, 0, 2)]  # seeds: mIoU 10 points apart
    indices = resample_indices(20)
    alone = row_intervals(evaluations(samples(better, "b")), indices, full=evaluations(samples(base)))
    assert alone["mIoU"].delta.resolved
    seeded = evaluations(*(samples([(max(i, 0), u) for i, u in s], f"s{k}") for k, s in enumerate(spread)))
    cell = row_intervals(evaluations(samples(better, "b")), indices, full=seeded)["mIoU"]
    assert not cell.delta.resolved and cell.delta.half_width > 5
    assert pooled_seed_variance([1.0, 3.0], [5.0]) == pytest.approx(2.0) and pooled_seed_variance([1.0]) == 0.0


def test_a_cells_interval_carries_the_seed_noise_of_its_row():
    """A rerun on another CPU trains as another seed would: a row's interval carries the seed
    variance of its mean (its own seeds; a once-trained row takes the full model's)."""
    constant = [(10, 20)] * 20  # every sample at IoU 50: no sample noise at all
    spread = [[(10 + k, 20)] * 20 for k in (-2, 0, 2)]  # seeds at mIoU 40, 50, 60
    indices = resample_indices(20)
    seeded = evaluations(*(samples(s, f"s{k}") for k, s in enumerate(spread)))
    own = row_intervals(seeded, indices)["mIoU"]
    assert own.high - own.low > 2 * 1.96 * 10 / np.sqrt(3) * 0.9  # s = 10 points, three seeds
    alone = row_intervals(evaluations(samples(constant, "b")), indices)["mIoU"]
    assert (alone.low, alone.high) == (50.0, 50.0)
    paired = row_intervals(evaluations(samples(constant, "b")), indices, full=seeded)["mIoU"]
    assert paired.high - paired.low > 2 * 1.96 * 10 * 0.9  # s = 10 points, one seed


def test_rows_on_different_samples_cannot_be_paired():
    row, other = samples([(1, 2)] * 3, "row"), samples([(1, 2)] * 3, "other", ids=["x", "y", "z"])
    with pytest.raises(DataError, match=r"other\.csv and row\.csv hold different samples"):
        row_intervals(evaluations(other), resample_indices(3), full=evaluations(row))


def test_the_bootstrap_is_deterministic_and_seeded():
    assert np.array_equal(resample_indices(50), resample_indices(50))
    assert not np.array_equal(resample_indices(50), resample_indices(50, seed=1))
    assert resample_indices(50).shape == (RESAMPLES, 50)
    row = evaluations(samples([(i % 5, 5) for i in range(50)]))
    assert row_intervals(row, resample_indices(50)) == row_intervals(row, resample_indices(50))


def test_a_per_sample_csv_is_read_in_split_order(tmp_path):
    path = tmp_path / "test.csv"
    write_per_sample(path, ["a", "b"], [(1, 2), (0, 0)])
    read = read_per_sample(path)
    assert read.ids == ("a", "b") and read.ious.tolist() == [0.5, 0.0]
    path.write_text(path.read_text().replace("\n1,b", "\n7,b"))
    with pytest.raises(DataError, match=rf"{path}:3: expected sample 1"):
        read_per_sample(path)
