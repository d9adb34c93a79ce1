"""Per-sample last-layer gradient norms (GradTune step 1)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _head_ce(head: dict, h_D: jax.Array, y: jax.Array) -> jax.Array:
    logits_C = h_D @ head["kernel"] + head["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits_C, y)


@jax.jit
def last_layer_grad_norms(head_params: dict, feats: jax.Array, labels: jax.Array) -> jax.Array:
    """`||grad_{W,b} CE(h_i W + b, y_i)||_2` for every row of `feats (N, D)`; returns `(N,)`.

    `head_params` is `{"kernel": (D, C), "bias": (C,)}`. Computed with `jax.vmap(jax.grad(...))`
    over the head; equals `||softmax(z) - onehot(y)|| * sqrt(||h||^2 + 1)`.
    """
    grads = jax.vmap(jax.grad(_head_ce), in_axes=(None, 0, 0))(head_params, feats, labels)
    sq_N = sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads))
    return jnp.sqrt(sq_N)


def last_layer_grad_norms_closed_form(head_params: dict, feats: jax.Array, labels: jax.Array) -> jax.Array:
    """Closed form of `last_layer_grad_norms`, for tests and as a fast path."""
    p_NC = jax.nn.softmax(feats @ head_params["kernel"] + head_params["bias"])
    r_NC = p_NC - jax.nn.one_hot(labels, p_NC.shape[-1])
    return jnp.linalg.norm(r_NC, axis=-1) * jnp.sqrt(jnp.sum(feats**2, axis=-1) + 1.0)
