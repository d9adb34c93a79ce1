"""GradTune and Random finetune: last-layer fine-tuning of the ERM head on a set chosen from D."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from gradtune_jax.kernels import gradtune_select, last_layer_grad_norms, random_select
from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.train.last_layer import HeadConfig, train_head


@dataclasses.dataclass(frozen=True)
class GradTuneConfig:
    """Fine-tuning set size `size` (M'), top-`k`, and the last-layer recipe."""

    size: int = 500
    k: int = 400
    head: HeadConfig = HeadConfig()


def heldout_grad_norms(fs: FeatureSet) -> np.ndarray:
    """Last-layer gradient norms of the ERM head on the held-out set D."""
    D = fs.D
    head = {k: jnp.asarray(v) for k, v in fs.head.items()}
    return np.asarray(last_layer_grad_norms(head, jnp.asarray(D.x), jnp.asarray(D.y)))


def finetune_on(fs: FeatureSet, idx_D: np.ndarray, cfg: HeadConfig, seed: int) -> dict:
    """Fine-tune (or retrain, with `cfg.reset`) the ERM head on `D[idx_D]`."""
    D = fs.D
    head = train_head(fs.head, D.x[idx_D], D.y[idx_D], cfg, seed)
    return {k: np.asarray(v) for k, v in head.items()}


def gradtune(fs: FeatureSet, cfg: GradTuneConfig, seed: int) -> tuple[dict, dict]:
    """GradTune: top-k + norm-proportional set from D, class-balanced last-layer fine-tuning.

    Uses no group labels. Returns the new head and an info dict (selected indices into D, norms).
    """
    norms = heldout_grad_norms(fs)
    idx = gradtune_select(norms, cfg.k, cfg.size, seed)
    info = {"n_heldout": len(norms), "n_selected": len(idx), "used_all_of_D": len(norms) <= cfg.size,
            "selected": idx, "norms": norms}
    return finetune_on(fs, idx, cfg.head, seed), info


def random_finetune(fs: FeatureSet, cfg: GradTuneConfig, seed: int) -> tuple[dict, dict]:
    """Random finetune: like GradTune but `size` indices drawn uniformly from D."""
    n = len(fs.heldout)
    idx = random_select(n, cfg.size, seed)
    return finetune_on(fs, idx, cfg.head, seed), {"n_heldout": n, "n_selected": len(idx), "selected": idx}
