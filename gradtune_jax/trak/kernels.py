"""TRAK featurisation kernels: margin output, projected per-example gradients, Q, kernel inverse.

All functions are pure; `featurize` is jitted and runs unchanged on a batch sharded over devices.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.kernels.per_example import KeyPath, flat_per_example_grads, num_params
from gradtune_jax.trak.projection import project

# `apply_fn(params, x_batch) -> logits (N, C)`.
ApplyFn = Callable[[Any, Any], jax.Array]


def margin(logits_C: jax.Array, y: jax.Array) -> jax.Array:
    """TRAK's classification output `logit_y - logsumexp(logits without y)` = log(p_y / (1 - p_y))."""
    onehot_C = jax.nn.one_hot(y, logits_C.shape[-1], dtype=bool)
    others_C = jnp.where(onehot_C, -jnp.inf, logits_C)
    return jnp.sum(jnp.where(onehot_C, logits_C, 0.0), axis=-1) - jax.nn.logsumexp(others_C, axis=-1)


def out_to_loss(logits_NC: jax.Array, y_N: jax.Array) -> jax.Array:
    """TRAK's `Q = 1 - p_y`, shape `(N,)`."""
    p_NC = jax.nn.softmax(logits_NC, axis=-1)
    return 1.0 - jnp.take_along_axis(p_NC, y_N[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _margin_fn(apply_fn: ApplyFn):
    def example_margin(params, x, y):
        x1 = jax.tree.map(lambda v: v[None], x)
        return margin(apply_fn(params, x1)[0], y)

    return example_margin


@functools.partial(jax.jit, static_argnames=("apply_fn", "wrt", "proj_dim", "proj_type", "block_size"))
def featurize(apply_fn: ApplyFn, params: Any, x: Any, y_N: jax.Array, key: jax.Array, *,
              wrt: KeyPath = None, proj_dim: int | None = 2048, proj_type: str = "normal",
              block_size: int | None = None, proj_matrix: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """TRAK features and Q of one batch: `(phi (N, k), q (N,))`.

    `phi = (grad_theta margin) @ P / sqrt(n_params)` with the gradient taken w.r.t. the subtree
    `wrt` of `params` (a key or key path; None = all) and `P` generated block by block from `key`
    (`proj_dim=None`: identity, k = n_params). `proj_matrix`, when given, is that same `P`
    already materialised (`materialize_projection`, possibly `padded`), which saves
    regenerating it per batch.
    """
    wrt = None if wrt is None else (wrt if isinstance(wrt, str) else tuple(wrt))
    g_NP = flat_per_example_grads(_margin_fn(apply_fn), params, x, y_N, wrt)
    if proj_matrix is not None:
        g_NP = jnp.pad(g_NP, ((0, 0), (0, proj_matrix.shape[0] - g_NP.shape[1]))) @ proj_matrix
    elif proj_dim is not None:
        g_NP = project(g_NP, key, proj_dim, proj_type, block_size)
    phi_NK = g_NP / jnp.sqrt(jnp.float32(num_params(params, wrt)))
    return phi_NK, out_to_loss(apply_fn(params, x), y_N)


def kernel_inverse(xtx_KK: np.ndarray, lambda_reg: float = 0.0, normalize: bool = True,
                   dtype: Any = np.float64) -> np.ndarray:
    """`inv(X^T X + lambda I)`, divided by its mean absolute entry when `normalize` (traker does).

    Computed in `dtype` (float64 default; traker uses float32) and returned as float32.
    """
    a = np.asarray(xtx_KK, dtype) + lambda_reg * np.eye(xtx_KK.shape[0], dtype=dtype)
    inv = np.linalg.inv(a)
    if normalize:
        inv = inv / np.mean(np.abs(inv))
    return inv.astype(np.float32)


@jax.jit
def gram(x_NK: jax.Array) -> jax.Array:
    """`X^T X` of one chunk of train features."""
    return jnp.matmul(x_NK.T, x_NK, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def score_block(x_NK: jax.Array, kinv_KK: jax.Array, phi_target_TK: jax.Array) -> jax.Array:
    """`(X K) Phi_target^T` for one chunk of train rows: `(N, T)`."""
    hi = jax.lax.Precision.HIGHEST
    return jnp.matmul(jnp.matmul(x_NK, kinv_KK, precision=hi), phi_target_TK.T, precision=hi)
