"""Train state: params, BatchNorm statistics, optimizer state and loss-specific extras."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """`flax` TrainState plus `batch_stats` (may be empty), `extra` (loss state such as GroupDRO's
    q) and `key` (dropout randomness: step `s` uses `fold_in(key, s)`)."""

    batch_stats: Any = flax.struct.field(default_factory=dict)
    extra: Any = flax.struct.field(default_factory=dict)
    key: Any = None


def create_state(model, variables: dict, tx: optax.GradientTransformation, seed: int = 0,
                 extra: Any = None) -> TrainState:
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                              batch_stats=variables.get("batch_stats", {}),
                              extra={} if extra is None else extra,
                              key=jax.random.key_data(jax.random.key(seed)))
    return state.replace(step=jnp.zeros((), jnp.int32))  # not a weak-typed int: one compilation


def variables_of(state: TrainState) -> dict:
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def zeros_like_extra(n_groups: int):
    return {"q": jnp.full((n_groups,), 1.0 / n_groups, jnp.float32)}
