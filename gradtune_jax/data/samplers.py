"""Index samplers: uniform, class-balanced and group-balanced (with replacement).

A sampler draws `n` indices for one epoch from `rng`; with `weights` 1/count(label) every label
is equally likely in expectation (the upstream `WeightedRandomSampler` behaviour).
"""
from __future__ import annotations

import numpy as np


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-example probability proportional to 1/count(label), normalised to sum to one."""
    labels = np.asarray(labels)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices drawn with replacement so that each label is equally likely."""
    return rng.choice(len(labels), size=n, replace=True, p=balanced_weights(labels))


def uniform_indices(n_items: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of a shuffled pass (without replacement) when n == n_items, else with replacement."""
    if n == n_items:
        return rng.permutation(n_items)
    return rng.choice(n_items, size=n, replace=True)


def epoch_indices(labels: np.ndarray | None, n_items: int, n: int, rng: np.random.Generator,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Draw one epoch: balanced on `labels` if given, by explicit `weights` if given, else uniform."""
    if weights is not None:
        p = np.asarray(weights, np.float64)
        return rng.choice(n_items, size=n, replace=True, p=p / p.sum())
    if labels is not None:
        return balanced_indices(labels, n, rng)
    return uniform_indices(n_items, n, rng)
