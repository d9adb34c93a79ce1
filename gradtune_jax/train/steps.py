"""Pure train and eval steps: `train_step(state, batch) -> (state, metrics)`.

A batch is a dict with `x` (inputs), `y` (int labels), `w` (per-example weights; 0 marks padding)
and optionally `g` (group ids, for group-aware losses). Losses have the signature
`loss_fn(logits_NC, batch, extra) -> (loss, new_extra)` so that stateful objectives (GroupDRO's
online group weights) stay pure.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gradtune_jax.train.state import TrainState

LossFn = Callable[[jax.Array, dict, dict], tuple[jax.Array, dict]]


def weighted_ce(logits_NC: jax.Array, batch: dict, extra: dict) -> tuple[jax.Array, dict]:
    """Mean cross-entropy weighted by `batch["w"]`."""
    ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NC, batch["y"])
    w_N = batch["w"]
    return jnp.sum(w_N * ce_N) / jnp.maximum(jnp.sum(w_N), 1e-12), extra


@functools.lru_cache(maxsize=None)  # one loss object per eta: jitted steps are reused, not retraced
def group_dro_loss(eta: float) -> LossFn:
    """GroupDRO: `q_g <- q_g * exp(eta * loss_g)` (normalised), loss = sum_g q_g loss_g."""

    def loss_fn(logits_NC, batch, extra):
        ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NC, batch["y"])
        q_G = extra["q"]
        onehot_NG = jax.nn.one_hot(batch["g"], q_G.shape[0]) * batch["w"][:, None]
        cnt_G = onehot_NG.sum(0)
        loss_G = (onehot_NG * ce_N[:, None]).sum(0) / jnp.maximum(cnt_G, 1.0)
        q_G = q_G * jnp.exp(eta * jax.lax.stop_gradient(loss_G) * (cnt_G > 0))
        q_G = q_G / q_G.sum()
        return jnp.sum(q_G * loss_G), {**extra, "q": q_G}

    return loss_fn


def _apply(state: TrainState, params, x, train: bool, rng=None):
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    rngs = {"dropout": rng} if rng is not None else None
    if train and state.batch_stats:
        (logits, aux), upd = state.apply_fn(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, aux, upd["batch_stats"]
    logits, aux = state.apply_fn(variables, x, train=train, rngs=rngs)
    return logits, aux, state.batch_stats


def train_step(state: TrainState, batch: dict, loss_fn: LossFn = weighted_ce,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; returns the new state and `{"loss", "acc"}`.

    With `axis_name` (inside `pmap`, see `train/parallel.py`) `batch` is this device's shard:
    `loss_fn` and the metrics see the logits and labels of the whole global batch (all-gathered;
    `x` stays local), gradients and BatchNorm statistics are averaged over the axis, and dropout
    keys differ per device.
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    labels = batch
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        labels = jax.lax.all_gather({k: v for k, v in batch.items() if k != "x"}, axis_name, tiled=True)

    def objective(params):
        logits, _, new_bs = _apply(state, params, batch["x"], True, rng)
        if axis_name is not None:  # transpose sums all devices' cotangents: grads = N x shard's share
            logits = jax.lax.all_gather(logits, axis_name, tiled=True)
        loss, new_extra = loss_fn(logits, labels, state.extra)
        return loss, (logits, new_bs, new_extra)

    (loss, (logits, new_bs, new_extra)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    if axis_name is not None:
        grads, new_bs = jax.lax.pmean((grads, new_bs), axis_name)  # mean of N x shares = the sum
    state = state.apply_gradients(grads=grads, batch_stats=new_bs, extra=new_extra)
    w = labels["w"]
    acc = jnp.sum(w * (jnp.argmax(logits, -1) == labels["y"])) / jnp.maximum(jnp.sum(w), 1e-12)
    return state, {"loss": loss, "acc": acc}


def eval_step(state: TrainState, x) -> tuple[jax.Array, jax.Array]:
    """Eval-mode logits and penultimate features."""
    logits, aux, _ = _apply(state, state.params, x, False)
    return logits, aux["feats"]
