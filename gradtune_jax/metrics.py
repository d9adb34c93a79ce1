"""Group metrics: per-group accuracy, WGA, average, Waterbirds train-weighted average, balanced."""
from __future__ import annotations

import numpy as np

# Waterbirds train group sizes, the weights DFR/AFR/JTT/GroupDRO use for their "average".
WATERBIRDS_TRAIN_COUNTS = np.array([3498, 184, 56, 1057], np.float64)


def group_accuracies(pred: np.ndarray, y: np.ndarray, masks_NG: np.ndarray) -> np.ndarray:
    """Accuracy within each group (column of `masks_NG`); NaN for an empty group."""
    correct = (np.asarray(pred) == np.asarray(y)).astype(np.float64)
    masks = np.asarray(masks_NG, bool)
    cnt = masks.sum(0)
    acc = (masks * correct[:, None]).sum(0) / np.maximum(cnt, 1)
    return np.where(cnt > 0, acc, np.nan)


def evaluate(pred: np.ndarray, y: np.ndarray, masks_NG: np.ndarray,
             train_group_counts: np.ndarray | None = None) -> dict:
    """All metrics (fractions in [0, 1]) of predictions against labels and group masks.

    `wga` is the minimum over groups present; `avg` the plain accuracy; `bal_acc` the unweighted
    mean of group accuracies; `wavg` (when `train_group_counts` is given) the group accuracies
    weighted by train group sizes.
    """
    ga = group_accuracies(pred, y, masks_NG)
    present = ~np.isnan(ga)
    out = {
        "avg": float(np.mean(np.asarray(pred) == np.asarray(y))),
        "wga": float(np.min(ga[present])),
        "bal_acc": float(np.mean(ga[present])),
        "group_acc": [None if np.isnan(v) else float(v) for v in ga],
        "worst_class": worst_class_accuracy(pred, y),
    }
    if train_group_counts is not None:
        w = np.asarray(train_group_counts, np.float64)[present]
        out["wavg"] = float(np.sum(ga[present] * w) / w.sum())
    return out


def worst_class_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Minimum per-class accuracy: the group-label-free model-selection criterion."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float(min(np.mean(pred[y == c] == c) for c in np.unique(y)))
