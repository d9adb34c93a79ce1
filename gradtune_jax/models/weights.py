"""Helpers shared by the checkpoint loaders: nested-dict (un)flattening and the linear head."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.errors import UserError


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> `{path tuple: leaf}`."""
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def unflatten(flat: Mapping[tuple[str, ...], np.ndarray]) -> dict:
    """`{path tuple: numpy array}` -> nested dict of jax arrays."""
    tree: dict = {}
    for path, arr in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(arr)
    return tree


def linear_head(state: Mapping[str, np.ndarray], src: str, prefix: str, feat_dim: int,
                num_classes: int, seed: int) -> dict:
    """The checkpoint's linear layer `prefix.weight (C, D)` / `prefix.bias (C,)` as head params
    `{"kernel" (D, C), "bias" (C,)}`; a fresh head from `seed` when it is absent or has a
    different class count."""
    w_key, b_key = f"{prefix}.weight", f"{prefix}.bias"
    if w_key in state and b_key in state and np.shape(state[w_key])[0] == num_classes:
        w_CD, b_C = np.asarray(state[w_key], np.float32), np.asarray(state[b_key], np.float32)
        if w_CD.shape != (num_classes, feat_dim) or b_C.shape != (num_classes,):
            raise UserError(f"{src}: key {w_key!r} has shape {w_CD.shape} and {b_key!r} "
                            f"{b_C.shape}, expected {(num_classes, feat_dim)} and {(num_classes,)}")
        return {"kernel": jnp.asarray(w_CD.T), "bias": jnp.asarray(b_C)}
    head = nn.Dense(num_classes).init(jax.random.key(seed), jnp.zeros((1, feat_dim), jnp.float32))
    return dict(head["params"])


def save_backbone(path: str, variables: Mapping) -> None:
    """Write a model's variables without its head as a Flax msgpack file: the weights format
    for any registered backbone (`Recipe(weights=path)`), e.g. a backbone pretrained here."""
    from flax import serialization

    from gradtune_jax.io import atomic_open
    from gradtune_jax.models.classifier import HEAD

    tree = {c: {k: v for k, v in dict(t).items() if k != HEAD} for c, t in variables.items()}
    with atomic_open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))


def load_backbone(path: str, fresh: Mapping) -> dict:
    """`fresh` variables (a seeded init of the target model) with every non-head entry replaced by
    the msgpack file's; raises `UserError` naming the file on a missing entry or a shape mismatch."""
    from flax import serialization

    from gradtune_jax.models.classifier import HEAD

    try:
        with open(path, "rb") as f:
            saved = serialization.msgpack_restore(f.read())
    except Exception as e:  # a corrupt or foreign file: one line
        raise UserError(f"{path}: cannot read backbone weights ({type(e).__name__})") from e
    want = {c: {k: v for k, v in dict(t).items() if k != HEAD} for c, t in fresh.items()}
    flat_want, flat_got = flatten(want), flatten(saved)
    for key, v in flat_want.items():
        if key not in flat_got:
            raise UserError(f"{path}: missing backbone entry {'/'.join(key)}")
        if tuple(np.shape(flat_got[key])) != tuple(np.shape(v)):
            raise UserError(f"{path}: entry {'/'.join(key)} has shape {tuple(np.shape(flat_got[key]))}, the model "
                            f"needs {tuple(np.shape(v))}")
    out = unflatten({k: np.asarray(flat_got[k], np.asarray(v).dtype) for k, v in flat_want.items()})
    out.setdefault("params", {})[HEAD] = fresh["params"][HEAD]
    return out
