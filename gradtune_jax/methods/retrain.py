"""Full retraining with model selection over epochs (shared by JTT, GroupDRO, RWG, SUBG).

Under a searching regime `fit` trains a few epochs at a time (one jitted step shared by all
chunks; chunk c draws its batches from a seed derived from `(seed, c)`); after each chunk the
model is scored on the model-selection half of validation by the regime (`oracle`: WGA,
`worst-class`: worst-class accuracy) and the best scored epoch is kept, as the papers' early
stopping does. `fixed` trains in one `fit` call and keeps the last epoch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.erm import ERMConfig, init_state
from gradtune_jax.methods.selection import check_regime, hide_groups, selection_score
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.state import TrainState
from gradtune_jax.train.steps import LossFn, train_step, weighted_ce


def recipe(erm: ERMConfig, epochs: int | None = None, **fit_changes) -> ERMConfig:
    """The ERM recipe with `fit` fields changed (`epochs=None` keeps ERM's epoch count)."""
    if epochs is not None:
        fit_changes["epochs"] = epochs
    return dataclasses.replace(erm, fit=dataclasses.replace(erm.fit, **fit_changes))


def predict_labels(state: TrainState, x: Any, batch_size: int = 512) -> np.ndarray:
    """Eval-mode predicted classes of a full model."""
    return predict(state, x, batch_size)[0].argmax(-1)


def train_selected(ds: GroupDataset, cfg: ERMConfig, seed: int, *, val_select: Split, regime: str,
                   train: Split | None = None, loss_fn: LossFn = weighted_ce, weights: np.ndarray | None = None,
                   extra: Any = None, desc: str = "retrain", progress: bool = False,
                   max_evals: int = 30, init_variables_fn: Callable | None = None) -> tuple[TrainState, dict]:
    """Train `cfg.model` from scratch on `train` (default `ds.train`) with `cfg.fit`; return the
    epoch chosen on `val_select` by `regime` (last epoch for `fixed`) and `{"epoch", "epoch_scores"}`.
    At most `max_evals` evenly spaced epochs (always including the last) are scored.

    `val_select` group labels are hidden unless the regime is `oracle`. `init_variables_fn` starts
    from given weights (e.g. a pretrained backbone) instead of a random initialisation.
    """
    check_regime(regime)
    if regime == "oracle":
        val_select.masks()  # fail before training if the validation groups are not readable
    train = ds.train if train is None else train
    ds_train = dataclasses.replace(ds, train=train)  # schedule length follows the actual train set
    state = init_state(ds_train, cfg, seed, init_variables_fn, extra=extra)
    kw = dict(seed=seed, loss_fn=loss_fn, weights=weights, desc=desc, progress=progress)
    if regime == "fixed":
        state, _ = fit(state, train, cfg.fit, **kw)
        return state, {"epoch": cfg.fit.epochs, "epoch_scores": []}
    val = val_select if regime == "oracle" else hide_groups(val_select)
    kw["step_fn"] = jax.jit(functools.partial(train_step, loss_fn=loss_fn), donate_argnums=0)
    best, best_epoch, best_score, scores = None, 0, -np.inf, []
    every = -(-cfg.fit.epochs // max_evals)
    done = 0
    for chunk, end in enumerate([*range(every, cfg.fit.epochs, every), cfg.fit.epochs]):
        kw["seed"] = int(np.random.default_rng([seed, chunk]).integers(2**31))
        state, _ = fit(state, train, dataclasses.replace(cfg.fit, epochs=end - done), **kw)
        done = end
        s = selection_score(predict_labels(state, val.x, cfg.eval_batch_size), val, regime)
        scores.append(float(s))
        if s > best_score:
            best, best_epoch, best_score = jax.device_get(state), end, s
    return best, {"epoch": best_epoch, "epoch_scores": scores}
