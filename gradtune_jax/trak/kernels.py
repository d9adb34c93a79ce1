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


KERNEL_METHODS = ("auto", "inverse", "pinv")


# Feature errors assumed: up to ULPS float32 ulps per entry (rounding of the stored float32
# features plus the accumulated rounding of the float32 gradient and projection computations).
ULPS = 100.0


def kernel_tolerance(eigs_K: np.ndarray, rtol: float | None = None) -> float:
    """Absolute eigenvalue cut of `A = X^T X + lambda I` from its eigenvalues.

    Default: `(ULPS * eps32)**2 * trace(A)`. An error `E` of relative size `ULPS * eps32` in each
    entry of the float32 features `X` has `||E||_2**2 <= ||E||_F**2 <= (ULPS * eps32)**2 *
    ||X||_F**2` and `||X||_F**2 = trace(X^T X)`, so eigenvalues below the cut can be produced by
    rounding alone (Weyl); it does not grow with n_train. Given `rtol`: `rtol * eig_max`.
    """
    eigs_K = np.asarray(eigs_K, np.float64)
    if rtol is not None:
        return float(rtol * max(eigs_K.max(), 0.0))
    return float((ULPS * np.finfo(np.float32).eps) ** 2 * np.clip(eigs_K, 0.0, None).sum())


def kernel_inverse_info(xtx_KK: np.ndarray, lambda_reg: float = 0.0, normalize: bool = True,
                        dtype: Any = np.float64, method: str = "auto",
                        rtol: float | None = None) -> tuple[np.ndarray, dict]:
    """Rank-safe `(X^T X + lambda I)^{-1}` and a report of what was done.

    The symmetric matrix `A = X^T X + lambda I` is eigendecomposed in `dtype` (float64 default).
    Its numerical rank counts eigenvalues above `kernel_tolerance` (default
    `(100 eps32)**2 trace(A)`: what 100 float32 ulps of error per feature entry can produce;
    `rtol` given: `rtol * lambda_max`).
    `method="auto"` (default): the ordinary inverse when `A` has full numerical rank, else the pseudo-inverse on the eigenspace above the tolerance (directions
    below it are float32 rounding of a rank-deficient `X` - inverting them amplifies noise by
    up to 1e14, which is what a plain `inv` of a singular `A` returns). `"pinv"` always
    truncates; `"inverse"` is the old behaviour and raises `numpy.linalg.LinAlgError` on a
    rank-deficient `A` instead of inverting it. Divided by its mean absolute entry when
    `normalize` (traker does); returned as float32 with `{"k", "rank", "condition_number",
    "eig_max", "eig_min", "tolerance", "method"}` (`condition_number = eig_max / eig_min`,
    inf when `eig_min <= 0`; `method` = what was applied: "inverse" or "pinv").
    """
    if method not in KERNEL_METHODS:
        raise ValueError(f"kernel method must be one of {KERNEL_METHODS}, got {method!r}")
    k = xtx_KK.shape[0]
    a = np.asarray(xtx_KK, dtype)
    a = 0.5 * (a + a.T) + lambda_reg * np.eye(k, dtype=dtype)
    w_K, v_KK = np.linalg.eigh(a)
    eig_max, eig_min = float(w_K[-1]), float(w_K[0])
    tol = kernel_tolerance(w_K, rtol)
    keep = w_K > tol
    rank = int(keep.sum())
    info = {"k": int(k), "rank": rank, "eig_max": eig_max, "eig_min": eig_min, "tolerance": float(tol),
            "condition_number": float(eig_max / eig_min) if eig_min > 0 else float("inf")}
    if rank == k and method != "pinv":
        info["method"] = "inverse"
    elif method == "inverse":
        raise np.linalg.LinAlgError(f"X^T X + lambda I is rank deficient (rank {rank} of {k}, condition number "
                                    f"{info['condition_number']:.3g}); use method='auto' or a larger lambda_reg")
    else:
        info["method"] = "pinv"
    if rank == 0:
        inv = np.zeros_like(a)
    else:
        v_KR = v_KK[:, keep]
        inv = (v_KR / w_K[keep]) @ v_KR.T
    if normalize and rank:
        inv = inv / np.mean(np.abs(inv))
    return inv.astype(np.float32), info


def kernel_inverse(xtx_KK: np.ndarray, lambda_reg: float = 0.0, normalize: bool = True,
                   dtype: Any = np.float64, method: str = "auto", rtol: float | None = None) -> np.ndarray:
    """`kernel_inverse_info` without the report: the rank-safe `inv(X^T X + lambda I)`
    (pseudo-inverse when rank deficient), normalised by its mean absolute entry."""
    return kernel_inverse_info(xtx_KK, lambda_reg, normalize, dtype, method, rtol)[0]


def gram64(x_NK: np.ndarray) -> np.ndarray:
    """`X^T X` of one chunk of train features in float64 on the host (rounding in the Gram would
    otherwise sit at ~1e-7 of its largest eigenvalue and hide a rank deficiency)."""
    x = np.asarray(x_NK, np.float64)
    return x.T @ x


@jax.jit
def gram(x_NK: jax.Array) -> jax.Array:
    """`X^T X` of one chunk of train features."""
    return jnp.matmul(x_NK.T, x_NK, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def score_block(x_NK: jax.Array, kinv_KK: jax.Array, phi_target_TK: jax.Array) -> jax.Array:
    """`(X K) Phi_target^T` for one chunk of train rows: `(N, T)`."""
    hi = jax.lax.Precision.HIGHEST
    return jnp.matmul(jnp.matmul(x_NK, kinv_KK, precision=hi), phi_target_TK.T, precision=hi)
