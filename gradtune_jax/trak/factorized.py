"""Factorized (per-layer Kronecker) projection of per-example gradients, never forming them.

For a Dense layer `out_t = x_t W + b` applied at positions t (tokens, pixels), the per-example
gradient of the margin w.r.t. `W` is `G = sum_t x_t^T delta_t` with `delta_t = d margin / d out_t`.
With a Kronecker projection `P = P_in (x) P_out` (`P_in (d_in, k_in)`, `P_out (d_out, k_out)`,
iid N(0, 1)), `vec(G)^T P = vec(sum_t (x_t P_in)^T (delta_t P_out))`: a `(k_in, k_out)` block
computed from the layer's input and output gradient only (LoGra / bergson). A Conv layer is the
same over its input patches (`lax.conv_general_dilated_patches` with the layer's strides,
padding and dilations), an Embed layer with `x_t = onehot(id_t)`, i.e. `x_t P_in = P_in[id_t]`.
Every other parameter under `wrt` (biases, norm scales, layers this module does not factor) is
differentiated with `vmap(grad)` and projected densely (Gaussian). Layer inputs are captured and
output gradients obtained with `flax.linen.intercept_methods` (a zero perturbation added to each
layer's output, differentiated in the same backward pass as the small parameters).

Relation to the dense JL projection: `E[P P^T] = k_in k_out I` for the Kronecker projection as
for a dense Gaussian one, so after scaling each block by `1/sqrt(k_l)` the inner products of the
features are unbiased estimates of the gradients' inner products, layer by layer; the
variance is larger than a dense projection's of the same k (the entries of `P_in (x) P_out` are
not independent), and the cross-layer terms are dropped in expectation only, as in the dense
case. Features are scaled by `sqrt(k / n_params)` overall so that their scale matches the dense
projection's `g P / sqrt(n_params)`.

Per-layer dims: the k dims are shared equally among the factored layers and (when present)
the group of small parameters; layer l gets `k_in x k_out` with `k_in = floor(sqrt(share))`,
`k_out = share // k_in` (capped at `d_in`, `d_out`); what is left over goes to the small group
(up to its size), then grows the layers' blocks, so the dims sum to k (zero columns pad the rest
only when every block is the full layer).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gradtune_jax.kernels.per_example import KeyPath, replicate, shard_batch
from gradtune_jax.trak.kernels import out_to_loss

FACTORED = (nn.Dense, nn.Conv, nn.Embed)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One factored layer: its variable path, kind, input/output widths and projection dims."""

    name: str
    leaf: tuple[str, ...]  # path of its kernel/embedding in the variables tree
    kind: str  # "dense" | "conv" | "embed"
    d_in: int
    d_out: int
    k_in: int = 0
    k_out: int = 0
    conv: tuple | None = None  # (kernel_size, strides, padding, input_dilation, kernel_dilation)


def _wrt_path(wrt: KeyPath) -> tuple[str, ...]:
    return () if wrt is None else (wrt,) if isinstance(wrt, str) else tuple(wrt)


def _conv_settings(mod: nn.Conv, ndim: int) -> tuple | None:
    if mod.feature_group_count != 1 or (isinstance(mod.padding, str) and mod.padding not in ("SAME", "VALID")):
        return None
    n = ndim

    def tup(v, default=1):
        v = default if v is None else v
        return (v,) * n if isinstance(v, int) else tuple(v)

    pad = mod.padding
    if isinstance(pad, int):
        pad = ((pad, pad),) * n
    elif not isinstance(pad, str):
        pad = tuple((p, p) if isinstance(p, int) else tuple(p) for p in pad)
    return (tuple(mod.kernel_size), tup(mod.strides), pad, tup(mod.input_dilation), tup(mod.kernel_dilation))


def discover_layers(apply_fn: Callable, params: Any, x1: Any, wrt: KeyPath = None) -> list[Layer]:
    """The Dense/Conv/Embed layers that `apply_fn(params, x1)` calls and whose kernel lies under
    `wrt` (traced abstractly, nothing computed)."""
    found: dict[str, Layer] = {}
    prefix = _wrt_path(wrt)

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, FACTORED):
            leaf_name = "embedding" if isinstance(mod, nn.Embed) else "kernel"
            leaf = ("params", *mod.path, leaf_name)
            if leaf[:len(prefix)] == prefix and leaf_name in mod.variables.get("params", {}):
                w = mod.variables["params"][leaf_name]
                name = "/".join(mod.path)
                if isinstance(mod, nn.Embed):
                    found[name] = Layer(name, leaf, "embed", int(w.shape[0]), int(w.shape[1]))
                elif isinstance(mod, nn.Dense):
                    found[name] = Layer(name, leaf, "dense", int(w.shape[0]), int(w.shape[1]))
                else:
                    conv = _conv_settings(mod, w.ndim - 2)
                    if conv is not None:
                        found[name] = Layer(name, leaf, "conv", int(np.prod(w.shape[:-1])), int(w.shape[-1]),
                                            conv=conv)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda p, x: apply_fn(p, x), params, x1)
    return list(found.values())


def split_dims(layers: list[Layer], n_small: int, k: int) -> tuple[list[Layer], int]:
    """Per-layer `(k_in, k_out)` and the small group's dims, summing to at most k (see module doc)."""
    groups = len(layers) + (1 if n_small else 0)
    if groups == 0:
        raise ValueError("factorized projection: no parameters to differentiate")
    share = max(1, k // groups)
    out, used = [], 0
    for lay in layers:
        k_in = max(1, min(lay.d_in, math.isqrt(share)))
        k_out = max(1, min(lay.d_out, share // k_in))
        out.append(dataclasses.replace(lay, k_in=k_in, k_out=k_out))
        used += k_in * k_out
    if used > k:
        raise ValueError(f"factorized projection: proj_dim {k} is below one dim per factored layer "
                         f"({len(layers)} layers); expected proj_dim >= {used}")
    k_small = min(n_small, k - used)
    left = k - used - k_small
    grown = True
    while left > 0 and grown:  # small group saturated: grow the layers' blocks into what is left
        grown = False
        for i, lay in enumerate(out):
            if lay.k_out < lay.d_out and lay.k_in <= left:
                out[i] = lay = dataclasses.replace(lay, k_out=lay.k_out + 1)
                left, grown = left - lay.k_in, True
            if lay.k_in < lay.d_in and lay.k_out <= left:
                out[i] = dataclasses.replace(lay, k_in=lay.k_in + 1)
                left, grown = left - lay.k_out, True
    return out, k_small


def _leaf_paths(tree: Any) -> list[tuple[str, ...]]:
    return [tuple(getattr(p, "key", getattr(p, "name", str(p))) for p in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set(tree[path[0]], path[1:], value)
    return out


def make_factorized_featurizer(apply_fn: Callable, params: Any, key: jax.Array, *, wrt: KeyPath = None,
                               proj_dim: int | None = 2048, mesh: Mesh | None = None, x_example: Any = None,
                               identity: bool = False) -> Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`fn(x_chunk, y_chunk) -> (phi (B, k), q (B,))` with the factorized projection (module doc).

    The layers are discovered on the first chunk. `identity=True` (tests) uses identity `P_in`,
    `P_out` and no small-group projection: the features are then the exact per-example gradient
    (factored layers' blocks, then the small leaves), unscaled.
    """
    if proj_dim is None and not identity:
        raise ValueError("factorized projection needs a proj_dim")
    state: dict = {}
    prefix = _wrt_path(wrt)

    def build(x_batch: Any) -> None:
        x1 = jax.tree.map(lambda v: v[:1], x_batch)
        layers = discover_layers(apply_fn, params, x1, wrt)
        factored = {lay.leaf for lay in layers}
        small_paths = [p for p in _leaf_paths(params) if p[:len(prefix)] == prefix and p not in factored]
        n_small = sum(int(np.prod(np.shape(_get(params, p)))) for p in small_paths)
        n_total = n_small + sum(int(np.prod(np.shape(_get(params, lay.leaf)))) for lay in layers)
        if identity:
            layers = [dataclasses.replace(lay, k_in=lay.d_in, k_out=lay.d_out) for lay in layers]
            k_small, k = n_small, None
        else:
            layers, k_small = split_dims(layers, n_small, proj_dim)
            k = proj_dim
        projs = []
        for i, lay in enumerate(layers):
            ki, ko = jax.random.split(jax.random.fold_in(key, i))
            if identity:
                projs.append((jnp.eye(lay.d_in), jnp.eye(lay.d_out)))
            else:
                projs.append((jax.random.normal(ki, (lay.d_in, lay.k_in), jnp.float32),
                              jax.random.normal(ko, (lay.d_out, lay.k_out), jnp.float32)))
        p_small = None
        if k_small and not identity:
            p_small = jax.random.normal(jax.random.fold_in(key, len(layers)), (n_small, k_small), jnp.float32)
        names = {lay.name for lay in layers}
        shapes: dict[str, list] = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            mod = context.module
            if context.method_name == "__call__" and isinstance(mod, FACTORED) and "/".join(mod.path) in names:
                shapes.setdefault("/".join(mod.path), []).append((out.shape, out.dtype))
            return out

        with nn.intercept_methods(record):
            jax.eval_shape(lambda p, x: apply_fn(p, x), params, x1)
        state.update(layers=layers, projs=projs, p_small=p_small, small_paths=small_paths, k=k,
                     scale=1.0 if identity else math.sqrt(k / n_total), fn=None,
                     pert_shapes=lambda: {n: [jnp.zeros(s, d) for s, d in lst] for n, lst in shapes.items()})
        state["fn"] = jax.jit(_batch_features(apply_fn, state))

    placed = {"params": replicate(params, mesh) if mesh is not None else params}

    def fn(x: Any, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not state:
            build(x)
        batch = (x, np.asarray(y).astype(np.int32))
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        phi, q = state["fn"](placed["params"], state["projs"], state["p_small"], batch[0], batch[1])
        return np.asarray(phi), np.asarray(q)

    fn.state = state  # for inspection (layers and dims)
    return fn


def _batch_features(apply_fn: Callable, state: dict) -> Callable:
    layers, small_paths = state["layers"], state["small_paths"]
    by_name = {lay.name: i for i, lay in enumerate(layers)}

    def one(params, projs, p_small, x_i, y_i):
        x1 = jax.tree.map(lambda v: v[None], x_i)
        small = [_get(params, p) for p in small_paths]

        def margin_of(perts, small):
            p = params
            for path, v in zip(small_paths, small):
                p = _set(p, path, v)
            inputs: dict[str, list] = {}

            def interceptor(next_fun, args, kwargs, context):
                mod = context.module
                name = "/".join(mod.path) if isinstance(mod, FACTORED) else None
                if context.method_name != "__call__" or name not in by_name:
                    return next_fun(*args, **kwargs)
                calls = inputs.setdefault(name, [])
                out = next_fun(*args, **kwargs)
                pert = perts[name][len(calls)]
                calls.append(args[0])
                return out + pert.astype(out.dtype)

            with nn.intercept_methods(interceptor):
                logits = apply_fn(p, x1)
            from gradtune_jax.trak.kernels import margin
            return margin(logits[0].astype(jnp.float32), y_i), inputs

        perts = state["pert_shapes"]()
        grads, inputs = jax.grad(margin_of, argnums=(0, 1), has_aux=True)(perts, small)
        g_perts, g_small = grads
        feats = []
        for lay, (p_in, p_out) in zip(layers, projs):
            block = jnp.zeros((lay.k_in, lay.k_out), jnp.float32)
            for xin, delta in zip(inputs[lay.name], g_perts[lay.name]):
                a_TI = _layer_input(lay, xin, p_in)
                d_TO = delta.reshape(-1, lay.d_out).astype(jnp.float32) @ p_out
                block = block + a_TI.T @ d_TO
            feats.append(block.reshape(-1) / (1.0 if p_small is None and state["k"] is None
                                             else math.sqrt(lay.k_in * lay.k_out)))
        if small_paths:
            g = jnp.concatenate([v.reshape(-1).astype(jnp.float32) for v in g_small])
            feats.append(g if state["k"] is None else
                         (g @ p_small / math.sqrt(p_small.shape[1]) if p_small is not None else jnp.zeros(0)))
        phi = jnp.concatenate(feats) * state["scale"]
        if state["k"] is not None and phi.shape[0] < state["k"]:
            phi = jnp.pad(phi, (0, state["k"] - phi.shape[0]))
        return phi

    def batch_fn(params, projs, p_small, x, y):
        phi = jax.vmap(one, in_axes=(None, None, None, 0, 0))(params, projs, p_small, x, y)
        return phi, out_to_loss(apply_fn(params, x), y)

    return batch_fn


def _layer_input(lay: Layer, xin: jax.Array, p_in: jax.Array) -> jax.Array:
    """`(T, k_in)`: the layer's input rows (patches for a conv, one-hot ids for an embedding)
    times `P_in`."""
    if lay.kind == "embed":
        return jnp.take(p_in, xin.reshape(-1).astype(jnp.int32), axis=0)
    if lay.kind == "conv":
        ksize, strides, pad, in_dil, k_dil = lay.conv
        nd = len(ksize)
        xin = xin.astype(jnp.float32)
        if xin.ndim == nd + 1:
            xin = xin[None]
        spec = ("NHWC", "OIHW", "NHWC") if nd == 2 else None
        patches = jax.lax.conv_general_dilated_patches(
            xin, ksize, strides, pad, lhs_dilation=in_dil, rhs_dilation=k_dil,
            dimension_numbers=spec if spec else jax.lax.conv_dimension_numbers(
                xin.shape, (1, xin.shape[-1]) + tuple(ksize), ("N" + "HWD"[:nd] + "C", "OI" + "HWD"[:nd],
                                                               "N" + "HWD"[:nd] + "C")),
            precision=jax.lax.Precision.HIGHEST)
        # patches' features are ordered (channel, *window); the kernel rows (*window, channel):
        c = xin.shape[-1]
        win = int(np.prod(ksize))
        rows = patches.reshape(-1, c, win).transpose(0, 2, 1).reshape(-1, win * c)
        return rows @ p_in
    return xin.reshape(-1, lay.d_in).astype(jnp.float32) @ p_in
