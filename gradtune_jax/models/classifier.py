"""Backbone + linear head. Every model returns `(logits, {"feats": h})`.

The head is the submodule named `head` (a `Dense` with `kernel (D, C)` and `bias (C,)`), so the
last-layer methods address `params["head"]` whatever the backbone is.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

HEAD = "head"


class Classifier(nn.Module):
    """`backbone(x, train) -> feats (N, D)` followed by a linear head to `num_classes` logits."""

    backbone: nn.Module
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        feats_ND = self.backbone(x, train=train)
        logits_NC = nn.Dense(self.num_classes, dtype=self.dtype, name=HEAD)(feats_ND)
        return logits_NC.astype(jnp.float32), {"feats": feats_ND.astype(jnp.float32)}
