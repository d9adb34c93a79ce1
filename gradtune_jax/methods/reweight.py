"""RWG and SUBG (Idrissi et al., 2022): group-balanced upsampling / subsampling of train.

RWG samples every group equally often (with replacement, epoch length |train|). SUBG trains on a
seeded subset with `min_g count(g)` examples per group; its epoch count is scaled so that it takes
as many optimizer steps as the same number of epochs on all of train (`steps_matched`). Both need train group labels;
the retraining epoch is selected by the regime.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.dfr import group_balanced_subsample
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.methods.retrain import derive, train_selected
from gradtune_jax.train.loop import steps_per_epoch
from gradtune_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class ReweightConfig:
    """Epochs (None: ERM's; SUBG then matches ERM's step count when `steps_matched`)."""

    epochs: int | None = None
    steps_matched: bool = True


def rwg(ds: GroupDataset, recipe: Recipe, cfg: ReweightConfig, seed: int, val_select: Split, regime: str,
        progress: bool = False) -> tuple[TrainState, dict]:
    """RWG: the ERM recipe with a group-balanced sampler."""
    return train_selected(ds, derive(recipe, cfg.epochs, sampler="group_balanced"), seed, val_select=val_select,
                          regime=regime, desc="RWG", progress=progress)


def subg_indices(g: np.ndarray, seed: int) -> np.ndarray:
    """The SUBG train subset: `min_g count(g)` examples of every group, seeded."""
    return group_balanced_subsample(g, np.random.default_rng([seed, 7]))


def subg(ds: GroupDataset, recipe: Recipe, cfg: ReweightConfig, seed: int, val_select: Split, regime: str,
         progress: bool = False) -> tuple[TrainState, dict]:
    """SUBG: the ERM recipe (uniform sampler) on the group-balanced subset."""
    idx = subg_indices(ds.train.g, seed)
    epochs = cfg.epochs or recipe.epochs
    if cfg.steps_matched:
        total = epochs * steps_per_epoch(len(ds.train), recipe.batch_size)
        epochs = max(1, round(total / steps_per_epoch(len(idx), recipe.batch_size)))
    state, info = train_selected(ds, derive(recipe, epochs, sampler="uniform"), seed, val_select=val_select, regime=regime, train=ds.train.subset(idx),
                                 desc="SUBG", progress=progress)
    return state, {**info, "n_subset": len(idx), "epochs": epochs}
