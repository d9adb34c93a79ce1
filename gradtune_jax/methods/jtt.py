"""JTT (Liu et al., 2021): error set of an early ERM model, then retraining with it upsampled.

The identification model is the early ERM checkpoint (`methods.early`, T epochs of the ERM
recipe); the error set is the train examples it misclassifies (eval mode). The second model is
trained from scratch with per-example sampling weight `lambda_up` on the error set and 1 elsewhere
(the "weighted" sampler, epoch length |train|: in expectation the upsampled data set of the paper
at the cost of one ERM epoch). `lambda_up` and the retraining epoch are selected by the regime.
Needs no train group labels.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.early import early_logits
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.methods.retrain import derive, predict_labels, train_selected
from gradtune_jax.methods.selection import grid, select
from gradtune_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class JTTConfig:
    """`id_epochs` T, the fixed-regime `lambda_up`, the searched `lambda_grid`, and the epochs of
    the second model (None: ERM's)."""

    id_epochs: int = 5
    lambda_up: float = 100.0
    lambda_grid: tuple[float, ...] = (20.0, 50.0, 100.0)
    epochs: int | None = None


def error_set(logits_NC: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the misclassified examples."""
    return np.asarray(logits_NC).argmax(-1) != np.asarray(y)


def upsample_weights(errors: np.ndarray, lambda_up: float) -> np.ndarray:
    """Sampling weight `lambda_up` on the error set, 1 elsewhere."""
    return np.where(np.asarray(errors, bool), float(lambda_up), 1.0)


def jtt(ds: GroupDataset, recipe: Recipe, cfg: JTTConfig, seed: int, val_select: Split, regime: str,
        progress: bool = False, id_recipe: Recipe | None = None) -> tuple[TrainState, dict]:
    """JTT's final model and info (error-set size, chosen `lambda_up` and epoch, scores). The
    identification model is `id_recipe`'s early checkpoint (default `recipe`, the ERM run's), the
    second model `recipe` with the weighted sampler."""
    errors = error_set(early_logits(ds, id_recipe or recipe, cfg.id_epochs, seed, progress)["train"], ds.train.y)
    derived = derive(recipe, cfg.epochs, sampler="weighted")

    def fit(hp: dict) -> tuple[TrainState, dict]:
        return train_selected(ds, derived, seed, val_select=val_select, regime=regime,
                              weights=upsample_weights(errors, hp["lambda_up"]), desc="JTT", progress=progress)

    sel = select(grid(lambda_up=cfg.lambda_grid), {"lambda_up": cfg.lambda_up}, fit,
                 lambda m: predict_labels(m[0], val_select.x, recipe.eval_batch_size), val_select, regime)
    state, ep = sel.model
    return state, {"n_errors": int(errors.sum()), "lambda_up": sel.hparams["lambda_up"], "epoch": ep["epoch"],
                   "epoch_scores": ep["epoch_scores"], "scores": sel.scores, "recipe": ep["recipe"],
                   "id_recipe": (id_recipe or recipe).describe()}
