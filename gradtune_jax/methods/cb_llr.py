"""CB-LLR: class-balanced last-layer retraining of a freshly initialised head on all of D
(GradTune's last-layer recipe with `reset=True`). No group labels, no search."""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.methods.gradtune import finetune_on
from gradtune_jax.train.last_layer import HeadConfig


def cb_llr(fs: FeatureSet, head_cfg: HeadConfig, seed: int) -> dict:
    """A reset head trained class-balanced on every example of the held-out set D."""
    cfg = dataclasses.replace(head_cfg, reset=True, sampler="class_balanced")
    return finetune_on(fs, np.arange(len(fs.heldout)), cfg, seed)
