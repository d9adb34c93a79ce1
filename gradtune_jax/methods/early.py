"""The early ERM checkpoint: the run's recipe and seed stopped after `epochs` epochs.

The state comes from the recipe (same initialisation and weights, train transform applied by
`fit`), the optimizer keeps the full-length schedule and epoch `e` draws from
`default_rng([seed, e])`, so this is exactly the ERM run's checkpoint at that epoch. JTT uses it as the identification
model (error set on train), SELF for early-stop disagreement on D. Its eval-mode logits on train
and validation are computed once per (dataset, recipe, epochs, seed) and kept in memory.
"""
from __future__ import annotations

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, dataset_fingerprint
from gradtune_jax.methods.erm import init_state
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.recipe import Recipe

_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def early_logits(ds: GroupDataset, recipe: Recipe, epochs: int, seed: int, progress: bool = False) -> dict[str, np.ndarray]:
    """`{"train": (N_train, C), "val": (N_val, C)}` eval-mode logits of the early ERM checkpoint
    (`epochs` is capped at the ERM run's length).

    Reads only class labels (the ERM sampler is class-balanced), never group labels.
    """
    if epochs <= 0:
        raise ValueError(f"early checkpoint epochs must be positive, got {epochs}")
    epochs = min(epochs, recipe.epochs)
    key = (dataset_fingerprint(ds), recipe.fingerprint(), epochs, seed)
    if key not in _CACHE:
        state = init_state(ds, recipe, seed)
        state, _ = fit(state, ds.train, recipe, stop_at=epochs, seed=seed, desc=f"early ERM ({epochs} ep)",
                       progress=progress)
        _CACHE[key] = {s: predict(state, ds.split(s).x, recipe.eval_batch_size)[0] for s in ("train", "val")}
    return _CACHE[key]
