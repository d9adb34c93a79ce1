"""The seeded held-out split of validation (shared protocol)."""
from __future__ import annotations

import numpy as np


def heldout_split(n_val: int, seed: int, frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle `range(n_val)` with `default_rng(seed)`; the first `int(frac * n_val)` indices are the
    held-out set D (selection and fine-tuning), the rest the model-selection half."""
    if n_val < 2:
        raise ValueError(f"validation split needs at least 2 examples, got {n_val}")
    perm = np.random.default_rng(seed).permutation(n_val)
    cut = int(frac * n_val)
    return np.sort(perm[:cut]), np.sort(perm[cut:])
