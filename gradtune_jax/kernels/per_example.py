"""Per-example gradients of any scalar per-example function, via `vmap(grad)` under `jit`.

Works on one device or on a batch sharded over a 1-D device mesh (`NamedSharding(mesh,
P('data'))`, Auto axis types): the function is ordinary single-device code and XLA partitions
the batch axis, so the result is exact (no `pmean` trap, see jax_notes.md).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# `example_fn(params, x, y) -> scalar` on ONE example (no batch axis).
ExampleFn = Callable[[Any, Any, jax.Array], jax.Array]
KeyPath = str | Sequence[str] | None


def _path(wrt: KeyPath) -> tuple[str, ...]:
    if wrt is None:
        return ()
    return (wrt,) if isinstance(wrt, str) else tuple(wrt)


def get_subtree(params: Any, wrt: KeyPath) -> Any:
    """`params[wrt[0]][wrt[1]]...` (the whole tree when `wrt` is None)."""
    for k in _path(wrt):
        params = params[k]
    return params


def set_subtree(params: Any, wrt: KeyPath, sub: Any) -> Any:
    """A copy of the nested dict `params` with the subtree at `wrt` replaced by `sub`."""
    path = _path(wrt)
    if not path:
        return sub
    head, rest = path[0], path[1:]
    out = dict(params)
    out[head] = set_subtree(params[head], rest, sub)
    return out


def num_params(params: Any, wrt: KeyPath = None) -> int:
    """Number of scalars in the subtree at `wrt`."""
    return sum(math.prod(np.shape(v)) for v in jax.tree.leaves(get_subtree(params, wrt)))


def per_example_grads(example_fn: ExampleFn, params: Any, x: Any, y: jax.Array, wrt: KeyPath = None) -> Any:
    """Gradient of `example_fn(params, x_i, y_i)` w.r.t. the subtree `wrt` of `params`, for every i.

    Returns a pytree shaped like the subtree, each leaf with a leading batch axis. Call under
    `jax.jit` (as `flat_per_example_grads` does).
    """

    def fn(sub, xi, yi):
        return example_fn(set_subtree(params, wrt, sub), xi, yi)

    return jax.vmap(jax.grad(fn), in_axes=(None, 0, 0))(get_subtree(params, wrt), x, y)


def flatten_batched(tree: Any) -> jax.Array:
    """Concatenate the leaves of a batched pytree (leading axis N) into `(N, P)` float32."""
    leaves = jax.tree.leaves(tree)
    n = leaves[0].shape[0]
    return jnp.concatenate([v.reshape(n, -1).astype(jnp.float32) for v in leaves], axis=1)


def flat_per_example_grads(example_fn: ExampleFn, params: Any, x: Any, y: jax.Array,
                           wrt: KeyPath = None) -> jax.Array:
    """`(N, P)` per-example gradients, leaves concatenated in `jax.tree.leaves` order."""
    return flatten_batched(per_example_grads(example_fn, params, x, y, wrt))


flat_per_example_grads_jit = jax.jit(flat_per_example_grads, static_argnums=(0, 4))


def data_mesh(n_devices: int | None = None) -> Mesh:
    """A 1-D mesh named `'data'` over the first `n_devices` devices, with Auto axis types."""
    devices = jax.devices()[: n_devices or jax.device_count()]
    return Mesh(np.asarray(devices), ("data",), axis_types=(AxisType.Auto,))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf with its leading axis split over the mesh's `'data'` axis."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda v: jax.device_put(v, sharding), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf replicated over the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda v: jax.device_put(v, sharding), tree)
