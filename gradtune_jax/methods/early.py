"""The early ERM checkpoint: the ERM recipe and seed stopped after `epochs` epochs.

The optimizer keeps the full-length schedule and epoch `e` draws from `default_rng([seed, e])`,
so this is exactly the ERM run's checkpoint at that epoch. JTT uses it as the identification
model (error set on train), SELF for early-stop disagreement on D. Its eval-mode logits on train
and validation are computed once per (dataset, recipe, epochs, seed) and kept in memory.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.methods.erm import ERMConfig, init_state
from gradtune_jax.train.loop import fit, predict

_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def early_logits(ds: GroupDataset, cfg: ERMConfig, epochs: int, seed: int, progress: bool = False) -> dict[str, np.ndarray]:
    """`{"train": (N_train, C), "val": (N_val, C)}` eval-mode logits of the early ERM checkpoint
    (`epochs` is capped at the ERM run's length).

    Reads only class labels (the ERM sampler is class-balanced), never group labels.
    """
    if epochs <= 0:
        raise ValueError(f"early checkpoint epochs must be positive, got {epochs}")
    epochs = min(epochs, cfg.fit.epochs)
    key = (ds.name, repr(sorted(ds.info.items())), repr(cfg), epochs, seed)
    if key not in _CACHE:
        state = init_state(ds, cfg, seed)
        state, _ = fit(state, ds.train, dataclasses.replace(cfg.fit, epochs=epochs), seed=seed,
                       desc=f"early ERM ({epochs} ep)", progress=progress)
        _CACHE[key] = {s: predict(state, ds.split(s).x, cfg.eval_batch_size)[0] for s in ("train", "val")}
    return _CACHE[key]
