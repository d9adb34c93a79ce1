"""Last-layer training on cached features: fine-tuning (from the ERM head) or retraining (reset).

The whole run is one jitted `lax.scan` over precomputed index batches, so 500 epochs of a
500-example set cost a fraction of a second on CPU. Each epoch draws `len(feats)` indices from
`default_rng([seed, epoch])` with the chosen sampler; the ragged last batch is padded with
weight-0 rows so every step has the same shape.

`HeadConfig.parallel` picks the device layout ("none" by default: a head on cached features is a
(B, D) x (D, C) matmul per step, and one device beats any cross-device reduction per step). "jit"
shards every batch's columns over a 1-D device mesh (features, labels and head replicated);
"pmap" runs the same scan per device on its columns and combines gradients by weight sums, which
is exact for losses that are a `w`-weighted mean over the batch (the `HeadLoss` contract). Batches
are padded with weight-0 columns to a multiple of the device count.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from gradtune_jax.data.samplers import epoch_indices
from gradtune_jax.train.parallel import DATA_AXIS, check_mode, data_mesh
from gradtune_jax.train.optim import OptimConfig, cached_optimizer

# `loss(head, feats_BD, y_B, w_B)`: a `w`-weighted mean over the batch (sum(w * l) / sum(w)).
HeadLoss = Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Recipe of the last-layer step (defaults: GradTune's vision recipe, Table 3 + 500 epochs)."""

    epochs: int = 500
    batch_size: int = 32
    optim: OptimConfig = OptimConfig("sgd", 3e-3, 1e-4, 0.0, "constant")
    sampler: str = "class_balanced"  # "class_balanced" | "uniform" | "group_balanced" | "weighted"
    reset: bool = False  # True: retrain a freshly initialised head
    parallel: str = "none"  # "none" | "jit" | "pmap" (see the module docstring)


def head_ce(head: dict, feats_BD: jax.Array, y_B: jax.Array, w_B: jax.Array) -> jax.Array:
    """Weighted mean cross-entropy of a linear head."""
    logits_BC = feats_BD @ head["kernel"] + head["bias"]
    ce_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, y_B)
    return jnp.sum(w_B * ce_B) / jnp.maximum(jnp.sum(w_B), 1e-12)


def init_head(dim: int, n_classes: int, seed: int) -> dict:
    """A fresh head as flax's Dense initialises it (LeCun normal kernel, zero bias)."""
    kernel = jax.nn.initializers.lecun_normal()(jax.random.key(seed), (dim, n_classes), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((n_classes,), jnp.float32)}


def index_plan(labels: np.ndarray, cfg: HeadConfig, seed: int, groups: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(idx (S, B), w (S, B))` for all epochs; `S = epochs * ceil(n / B)`."""
    n, bs = len(labels), cfg.batch_size
    steps = -(-n // bs)
    by = {"class_balanced": labels, "group_balanced": groups, "uniform": None, "weighted": None}
    if cfg.sampler not in by:
        raise ValueError(f"head sampler must be one of {sorted(by)}, got {cfg.sampler!r}")
    if cfg.sampler == "group_balanced" and groups is None:
        raise ValueError("head sampler 'group_balanced' needs group labels")
    if cfg.sampler == "weighted" and weights is None:
        raise ValueError("head sampler 'weighted' needs per-example weights")
    idx = np.zeros((cfg.epochs, steps * bs), np.int32)
    w = np.zeros((cfg.epochs, steps * bs), np.float32)
    for e in range(cfg.epochs):
        rng = np.random.default_rng([seed, e])
        idx[e, :n] = epoch_indices(by[cfg.sampler], n, n, rng, weights=weights)
        w[e, :n] = 1.0
    return idx.reshape(-1, bs), w.reshape(-1, bs)


def _scan(head, feats_ND, y_N, idx_SB, w_SB, tx, loss_fn, axis_name=None):
    def step(carry, batch):
        head, opt = carry
        i_B, w_B = batch
        grads = jax.grad(loss_fn)(head, feats_ND[i_B], y_N[i_B], w_B)
        if axis_name is not None:  # weighted means of the shards -> weighted mean of the batch
            sw, total = jnp.sum(w_B), jnp.maximum(jax.lax.psum(jnp.sum(w_B), axis_name), 1e-12)
            grads = jax.tree.map(lambda g: jax.lax.psum(g * sw, axis_name) / total, grads)
        upd, opt = tx.update(grads, opt, head)
        return (optax.apply_updates(head, upd), opt), None

    (head, _), _ = jax.lax.scan(step, (head, tx.init(head)), (idx_SB, w_SB))
    return head


_run = jax.jit(_scan, static_argnames=("tx", "loss_fn", "axis_name"))


@functools.lru_cache(maxsize=16)
def _pmap_run(tx: optax.GradientTransformation, loss_fn: HeadLoss, devices: tuple) -> Callable:
    body = functools.partial(_scan, tx=tx, loss_fn=loss_fn, axis_name=DATA_AXIS)
    return jax.pmap(body, axis_name=DATA_AXIS, in_axes=(None, None, None, 1, 1), out_axes=None,
                    devices=list(devices))


def _run_parallel(mode: str, head, feats_ND, y_N, idx_SB: np.ndarray, w_SB: np.ndarray, tx, loss_fn):
    mesh = data_mesh()
    n = mesh.size
    pad = ((0, 0), (0, -idx_SB.shape[1] % n))
    idx_SB, w_SB = np.pad(idx_SB, pad), np.pad(w_SB, pad)
    head, feats_ND, y_N = jax.device_put((head, feats_ND, y_N), NamedSharding(mesh, P()))
    if mode == "jit":
        cols = NamedSharding(mesh, P(None, DATA_AXIS))
        return _run(head, feats_ND, y_N, jax.device_put(idx_SB, cols), jax.device_put(w_SB, cols), tx, loss_fn)
    s = idx_SB.shape[0]
    idx_SNB, w_SNB = idx_SB.reshape(s, n, -1), w_SB.reshape(s, n, -1)
    return _pmap_run(tx, loss_fn, tuple(mesh.devices.flat))(head, feats_ND, y_N, idx_SNB, w_SNB)


def train_head(head: dict, feats: np.ndarray, labels: np.ndarray, cfg: HeadConfig, seed: int, *,
               groups: np.ndarray | None = None, weights: np.ndarray | None = None,
               loss_fn: HeadLoss = head_ce) -> dict:
    """Train a linear head `{"kernel" (D, C), "bias" (C,)}` on fixed features; returns the new head.

    With `cfg.reset` the given head only fixes the shapes and a fresh one is trained.
    """
    feats = np.asarray(feats, np.float32)
    labels = np.asarray(labels)
    if len(feats) != len(labels) or len(feats) == 0:
        raise ValueError(f"need matching non-empty features and labels, got {len(feats)} and {len(labels)}")
    head = jax.tree.map(jnp.asarray, head)
    if cfg.reset:
        head = init_head(head["kernel"].shape[0], head["kernel"].shape[1], seed)
    idx, w = index_plan(labels, cfg, seed, groups=groups, weights=weights)
    tx = cached_optimizer(cfg.optim, len(idx))
    feats_ND, y_N = jnp.asarray(feats), jnp.asarray(labels, jnp.int32)
    if check_mode(cfg.parallel) == "none":
        return _run(head, feats_ND, y_N, jnp.asarray(idx), jnp.asarray(w), tx, loss_fn)
    return _run_parallel(cfg.parallel, head, feats_ND, y_N, idx, w, tx, loss_fn)
