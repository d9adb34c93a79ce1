"""Full retraining with model selection over epochs (shared by JTT, GroupDRO, RWG, SUBG).

Under a searching regime `fit` trains a few epochs at a time (the recipe's data-parallel step,
one jitted step shared by all chunks and fits; chunk c draws its batches from a seed derived
from `(seed, c)`); after each chunk the
model is scored on the model-selection half of validation by the regime (`oracle`: WGA,
`worst-class`: worst-class accuracy) and the best scored epoch is kept, as the papers' early
stopping does. `fixed` trains in one `fit` call and keeps the last epoch.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.erm import init_state
from gradtune_jax.methods.selection import check_regime, hide_groups, selection_score
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.recipe import InitFn, Recipe
from gradtune_jax.train.state import TrainState
from gradtune_jax.train.steps import LossFn, weighted_ce


def derive(recipe: Recipe, epochs: int | None = None, **changes) -> Recipe:
    """A method's variant of the run's recipe (`epochs=None` keeps the recipe's epoch count)."""
    if epochs is not None:
        changes["epochs"] = epochs
    return recipe.replace(**changes)


def predict_labels(state: TrainState, x: Any, batch_size: int = 512) -> np.ndarray:
    """Eval-mode predicted classes of a full model."""
    return predict(state, x, batch_size)[0].argmax(-1)


def train_selected(ds: GroupDataset, recipe: Recipe, seed: int, *, val_select: Split, regime: str,
                   train: Split | None = None, loss_fn: LossFn = weighted_ce, weights: np.ndarray | None = None,
                   extra: Any = None, desc: str = "retrain", progress: bool = False,
                   max_evals: int = 30, init_fn: InitFn | None = None) -> tuple[TrainState, dict]:
    """Train `recipe` from its initialisation on `train` (default `ds.train`); return the epoch
    chosen on `val_select` by `regime` (last epoch for `fixed`) and `{"epoch", "epoch_scores",
    "recipe"}`. At most `max_evals` evenly spaced epochs (always including the last) are scored.

    `val_select` group labels are hidden unless the regime is `oracle`. `init_fn` replaces the
    recipe's initialisation (uLA starts from its self-supervised backbone).
    """
    check_regime(regime)
    if regime == "oracle":
        val_select.masks()  # fail before training if the validation groups are not readable
    train = ds.train if train is None else train
    state = init_state(ds, recipe, seed, n_train=len(train), extra=extra, init_fn=init_fn)  # schedule: this set
    kw = dict(seed=seed, loss_fn=loss_fn, weights=weights, desc=desc, progress=progress)
    record = recipe.describe() if init_fn is None else {**recipe.describe(), "init": {"source": "init_fn"}}
    if regime == "fixed":
        state, _ = fit(state, train, recipe, **kw)
        return state, {"epoch": recipe.epochs, "epoch_scores": [], "recipe": record}
    val = val_select if regime == "oracle" else hide_groups(val_select)
    best, best_epoch, best_score, scores = None, 0, -np.inf, []
    every = -(-recipe.epochs // max_evals)
    done = 0
    for chunk, end in enumerate([*range(every, recipe.epochs, every), recipe.epochs]):
        kw["seed"] = int(np.random.default_rng([seed, chunk]).integers(2**31))
        state, _ = fit(state, train, recipe, stop_at=end - done, **kw)
        done = end
        s = selection_score(predict_labels(state, val.x, recipe.eval_batch_size), val, regime)
        scores.append(float(s))
        if s > best_score:
            best, best_epoch, best_score = jax.device_get(state), end, s
    return best, {"epoch": best_epoch, "epoch_scores": scores, "recipe": record}
