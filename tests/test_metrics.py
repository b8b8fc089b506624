"""compute_metrics against cases worked out by hand (LAVT/RMSIN convention)."""

import numpy as np
import pytest

from diffris.training.metrics import METRIC_KEYS, compute_metrics, intersection_union, metrics_from_counts


def mask(shape: tuple[int, int], *cells: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for cell in cells:
        out[cell] = True
    return out


def test_keys_are_the_papers_columns():
    result = compute_metrics([mask((2, 2), (0, 0))], [mask((2, 2), (0, 0))])
    assert tuple(result) == METRIC_KEYS
    assert METRIC_KEYS == ("Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "oIoU", "mIoU")
    assert all(isinstance(v, float) for v in result.values())


def test_perfect_prediction_scores_100_everywhere():
    gt = mask((4, 4), (0, 0), (1, 1), (2, 3))
    assert compute_metrics([gt], [gt.copy()]) == {key: 100.0 for key in METRIC_KEYS}


def test_hand_computed_three_samples():
    # sample a: pred 4 px, gt 2 px inside it      -> I=2, U=4,  IoU=0.5
    # sample b: pred 3 px, gt 3 px, 2 shared      -> I=2, U=4,  IoU=0.5
    # sample c: pred 9 of 10 gt px, no extra      -> I=9, U=10, IoU=0.9
    shape = (4, 4)
    preds = [
        mask(shape, (0, 0), (0, 1), (1, 0), (1, 1)),
        mask(shape, (2, 0), (2, 1), (2, 2)),
        mask(shape, *[(r, c) for r in range(3) for c in range(3)]),
    ]
    gts = [
        mask(shape, (0, 0), (0, 1)),
        mask(shape, (2, 1), (2, 2), (2, 3)),
        mask(shape, *[(r, c) for r in range(3) for c in range(3)], (3, 3)),
    ]
    result = compute_metrics(preds, gts)
    assert result["oIoU"] == pytest.approx(100 * 13 / 18)
    assert result["mIoU"] == pytest.approx(100 * (0.5 + 0.5 + 0.9) / 3)
    assert result["Pr@0.5"] == pytest.approx(100.0)  # IoU >= X, not >: 0.5 counts
    assert result["Pr@0.6"] == pytest.approx(100 / 3)
    assert result["Pr@0.9"] == pytest.approx(100 / 3)  # 9/10 is exactly 0.9


def test_empty_prediction_on_nonempty_mask_scores_zero():
    result = compute_metrics([mask((3, 3))], [mask((3, 3), (1, 1))])
    assert result == {key: 0.0 for key in METRIC_KEYS}


def test_empty_prediction_on_empty_mask_scores_zero_not_nan():
    # U = 0: IoU is 0 by convention and the sample adds nothing to the sums.
    result = compute_metrics([mask((3, 3)), mask((3, 3), (0, 0))], [mask((3, 3)), mask((3, 3), (0, 0))])
    assert result["mIoU"] == pytest.approx(50.0)
    assert result["oIoU"] == pytest.approx(100.0)
    assert result["Pr@0.5"] == pytest.approx(50.0)


def test_all_unions_empty_gives_zero_oiou():
    assert compute_metrics([mask((2, 2))], [mask((2, 2))])["oIoU"] == 0.0


def test_prediction_on_empty_mask_scores_zero():
    assert intersection_union(mask((2, 2), (0, 0)), mask((2, 2))) == (0, 1)
    assert compute_metrics([mask((2, 2), (0, 0))], [mask((2, 2))])["mIoU"] == 0.0


def test_oiou_weights_large_objects_and_miou_does_not():
    result = metrics_from_counts([90, 0], [100, 10])
    assert result["oIoU"] == pytest.approx(100 * 90 / 110)
    assert result["mIoU"] == pytest.approx(45.0)


def test_accepts_generators():
    preds = (mask((2, 2), (0, 0)) for _ in range(3))
    gts = (mask((2, 2), (0, 0)) for _ in range(3))
    assert compute_metrics(preds, gts)["mIoU"] == 100.0


@pytest.mark.parametrize(
    "preds, gts, error",
    [
        ([mask((2, 2))], [mask((2, 3))], ValueError),
        ([mask((2, 2))], [mask((2, 2)), mask((2, 2))], ValueError),
        ([mask((2, 2)), mask((2, 2))], [mask((2, 2))], ValueError),
        ([], [], ValueError),
        ([np.zeros((2, 2), dtype=np.uint8)], [mask((2, 2))], TypeError),
    ],
    ids=["shape", "fewer-preds", "fewer-masks", "no-samples", "not-boolean"],
)
def test_rejects_bad_input(preds, gts, error):
    with pytest.raises(error):
        compute_metrics(preds, gts)
