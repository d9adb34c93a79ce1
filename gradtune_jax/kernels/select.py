"""Fine-tuning set selection: GradTune's top-k + norm-proportional draw, and the uniform draw."""
from __future__ import annotations

import numpy as np


def gradtune_select(norms: np.ndarray, k: int, size: int, seed: int) -> np.ndarray:
    """Top-`k` indices by norm plus `size - k` drawn without replacement from the rest with
    probability proportional to the norm (`default_rng(seed).choice`). Returns sorted indices.

    When `len(norms) <= size` every index is returned.
    """
    norms = np.asarray(norms, np.float64)
    n = len(norms)
    if not 0 <= k <= size:
        raise ValueError(f"need 0 <= k <= size, got k={k}, size={size}")
    if np.any(~np.isfinite(norms)) or np.any(norms < 0):
        raise ValueError("norms must be finite and non-negative")
    if n <= size:
        return np.arange(n)
    order = np.argsort(-norms, kind="stable")
    top, rest = order[:k], order[k:]
    m = size - k
    if m == 0:
        return np.sort(top)
    w = norms[rest]
    pos = np.count_nonzero(w)
    if pos < m:  # not enough non-zero mass: take all positive, fill uniformly from the zeros
        w = w + (w.sum() + 1.0) * 1e-12
    drawn = np.random.default_rng(seed).choice(rest, m, replace=False, p=w / w.sum())
    return np.sort(np.concatenate([top, drawn]))


def random_select(n: int, size: int, seed: int) -> np.ndarray:
    """`size` indices drawn uniformly without replacement from `range(n)` (all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
