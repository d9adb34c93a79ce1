"""GroupDRO (Sagawa et al., 2019): online group weights `q_g <- q_g exp(eta loss_g)`, loss
`sum_g q_g loss_g` (`train.steps.group_dro_loss`), on group-balanced batches (the reference
code's `--reweight_groups`). Needs train group labels; `eta` and the epoch are selected by the
regime."""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.methods.retrain import derive, predict_labels, train_selected
from gradtune_jax.methods.selection import grid, select
from gradtune_jax.train.state import TrainState, zeros_like_extra
from gradtune_jax.train.steps import group_dro_loss


@dataclasses.dataclass(frozen=True)
class GroupDROConfig:
    """Step size of the group weights (fixed regime) and the searched grid; batch sampler; epochs
    (None: ERM's)."""

    eta: float = 0.01
    eta_grid: tuple[float, ...] = (0.01,)
    sampler: str = "group_balanced"
    epochs: int | None = None


def group_dro(ds: GroupDataset, recipe: Recipe, cfg: GroupDROConfig, seed: int, val_select: Split, regime: str,
              progress: bool = False) -> tuple[TrainState, dict]:
    """GroupDRO's model and info (chosen eta and epoch, final group weights q)."""
    derived = derive(recipe, cfg.epochs, sampler=cfg.sampler)

    def fit(hp: dict) -> tuple[TrainState, dict]:
        return train_selected(ds, derived, seed, val_select=val_select, regime=regime,
                              loss_fn=group_dro_loss(hp["eta"]), extra=zeros_like_extra(ds.train.n_groups),
                              desc="GroupDRO", progress=progress)

    sel = select(grid(eta=cfg.eta_grid), {"eta": cfg.eta}, fit,
                 lambda m: predict_labels(m[0], val_select.x, recipe.eval_batch_size), val_select, regime)
    state, ep = sel.model
    return state, {"eta": sel.hparams["eta"], "epoch": ep["epoch"], "epoch_scores": ep["epoch_scores"],
                   "recipe": ep["recipe"],
                   "q": np.asarray(state.extra["q"]).tolist(), "scores": sel.scores}
