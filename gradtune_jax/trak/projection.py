"""Random projections generated block by block from a counter-based key.

The projection `P (n_params x k)` is defined as the row-concatenation of blocks
`P_b = draw(fold_in(key, b), (block, k))`, truncated to `n_params` rows. `project` never holds
more than one block: memory beyond the input is O(block x k) whatever the parameter count.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

PROJ_TYPES = ("normal", "rademacher")
# Default block: ~8M projection entries (32 MiB in float32) per block.
BLOCK_ENTRIES = 1 << 23


def default_block_size(n_params: int, proj_dim: int) -> int:
    """Rows per projection block: about `BLOCK_ENTRIES / proj_dim`, at most `n_params`."""
    return max(1, min(n_params, BLOCK_ENTRIES // proj_dim))


def projection_block(key: jax.Array, block_index: jax.Array | int, block_size: int, proj_dim: int,
                     proj_type: str = "normal") -> jax.Array:
    """Block `block_index` of the projection: `(block_size, proj_dim)` float32, iid N(0,1) or +-1."""
    k = jax.random.fold_in(key, block_index)
    if proj_type == "normal":
        return jax.random.normal(k, (block_size, proj_dim), jnp.float32)
    if proj_type == "rademacher":  # 32 signs per random word: ~30x less generation than `rademacher`
        words = jax.random.bits(k, (block_size, -(-proj_dim // 32)), jnp.uint32)
        bits = (words[:, :, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
        return (2.0 * bits.reshape(block_size, -1)[:, :proj_dim] - 1.0).astype(jnp.float32)
    raise ValueError(f"proj_type must be one of {PROJ_TYPES}, got {proj_type!r}")


@functools.partial(jax.jit, static_argnames=("proj_dim", "proj_type", "block_size"))
def project(g_NP: jax.Array, key: jax.Array, proj_dim: int, proj_type: str = "normal",
            block_size: int | None = None) -> jax.Array:
    """`g_NP @ P` with `P` generated block by block inside a `lax.scan`; returns `(N, proj_dim)`."""
    n, p = g_NP.shape
    bs = block_size or default_block_size(p, proj_dim)
    n_blocks = -(-p // bs)
    g_pad = jnp.pad(g_NP.astype(jnp.float32), ((0, 0), (0, n_blocks * bs - p)))

    def body(acc_NK, b):
        g_blk = jax.lax.dynamic_slice_in_dim(g_pad, b * bs, bs, axis=1)
        return acc_NK + g_blk @ projection_block(key, b, bs, proj_dim, proj_type), None

    acc0 = jnp.zeros((n, proj_dim), jnp.float32)
    acc_NK, _ = jax.lax.scan(body, acc0, jnp.arange(n_blocks))
    return acc_NK


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4, 5))
def materialize_projection(n_params: int, key: jax.Array, proj_dim: int, proj_type: str = "normal",
                           block_size: int | None = None, padded: bool = False) -> jax.Array:
    """The whole `(n_params, proj_dim)` matrix `project` uses (small models, tests). `padded`
    keeps the zero-weight tail of the last block (`n_blocks * block` rows) and avoids a copy."""
    bs = block_size or default_block_size(n_params, proj_dim)
    n_blocks = -(-n_params // bs)
    blocks = jax.lax.map(lambda b: projection_block(key, b, bs, proj_dim, proj_type), jnp.arange(n_blocks))
    full = blocks.reshape(n_blocks * bs, proj_dim)
    return full if padded else full[:n_params]
