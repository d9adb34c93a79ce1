import numpy as np
import pytest

from gradtune_jax.metrics import WATERBIRDS_TRAIN_COUNTS, evaluate, group_accuracies, worst_class_accuracy


def onehot(g, n):
    return g[:, None] == np.arange(n)[None]


def test_metrics_hand_made():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    m = evaluate(pred, y, onehot(g, 4), WATERBIRDS_TRAIN_COUNTS)
    assert m["group_acc"] == [1.0, 0.5, 0.0, 1.0]
    assert m["wga"] == 0.0
    assert m["avg"] == pytest.approx(5 / 8)
    assert m["bal_acc"] == pytest.approx(0.625)
    assert m["wavg"] == pytest.approx((3498 * 1 + 184 * 0.5 + 0 + 1057) / 4795)
    assert m["worst_class"] == pytest.approx(0.5)


def test_wga_ignores_empty_groups_and_handles_overlap():
    y = np.array([0, 1, 1])
    pred = np.array([0, 1, 0])
    masks = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]], bool)  # group 2 empty, group 1 overlaps all
    ga = group_accuracies(pred, y, masks)
    assert ga[0] == 1.0 and ga[1] == pytest.approx(2 / 3) and np.isnan(ga[2])
    assert evaluate(pred, y, masks)["wga"] == pytest.approx(2 / 3)
    assert worst_class_accuracy(pred, y) == 0.5
