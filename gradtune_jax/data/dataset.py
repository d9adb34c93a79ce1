"""The one dataset representation every method consumes.

A `GroupDataset` holds the three official splits of a classification task with a spurious
attribute: inputs `x` (any array-like or pytree of arrays with a leading example axis), class `y`,
spurious attribute `a` and group `g = y * n_attrs + a`. Datasets whose groups overlap
(CivilComments' 16 WILDS groups) carry an explicit boolean membership matrix instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

SPLITS = ("train", "val", "test")


def take(x: Any, idx: np.ndarray) -> Any:
    """Index a pytree of arrays (or lazy array-likes) along the example axis."""
    return jax.tree.map(lambda v: v[idx], x)


def select(x: Any, idx: np.ndarray) -> Any:
    """Like `take`, but lazy array-likes with a `subset(idx)` method stay lazy (a view)."""
    return jax.tree.map(lambda v: v.subset(idx) if hasattr(v, "subset") else v[idx], x)


def num_examples(x: Any) -> int:
    return len(jax.tree.leaves(x)[0])


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: inputs, class, spurious attribute, and (optionally) overlapping groups."""

    x: Any
    y: np.ndarray
    a: np.ndarray
    n_classes: int
    n_attrs: int
    group_masks: np.ndarray | None = None  # (N, G) bool; only for overlapping groups

    def __post_init__(self):
        n = len(self.y)
        if len(self.a) != n or num_examples(self.x) != n:
            raise ValueError(f"split arrays disagree in length: x={num_examples(self.x)}, y={n}, a={len(self.a)}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def g(self) -> np.ndarray:
        """Disjoint group id `y * n_attrs + a`."""
        return (self.y * self.n_attrs + self.a).astype(np.int64)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attrs

    def masks(self) -> np.ndarray:
        """(N, G) group membership: the overlapping masks if any, else one-hot of `g`."""
        if self.group_masks is not None:
            return self.group_masks
        return self.g[:, None] == np.arange(self.n_groups)[None, :]

    def subset(self, idx: np.ndarray) -> "Split":
        idx = np.asarray(idx)
        gm = None if self.group_masks is None else self.group_masks[idx]
        return dataclasses.replace(self, x=select(self.x, idx), y=self.y[idx], a=self.a[idx], group_masks=gm)

    def group_counts(self) -> np.ndarray:
        return self.masks().sum(0)


@dataclasses.dataclass(frozen=True)
class GroupDataset:
    """A task with train/val/test splits, groups, names and provenance."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: Sequence[str]
    attr_names: Sequence[str]
    group_names: Sequence[str] | None = None
    input_kind: str = "image"  # "image" | "text" | "features"
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    @property
    def n_groups(self) -> int:
        return self.train.masks().shape[1]

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def names_of_groups(self) -> list[str]:
        if self.group_names is not None:
            return list(self.group_names)
        return [f"{c}/{a}" for c in self.class_names for a in self.attr_names]

    def count_table(self) -> str:
        """Per-split per-group counts as aligned text."""
        names = self.names_of_groups()
        w = max(len(n) for n in names)
        lines = [f"{'group':<{w}}  " + "  ".join(f"{s:>7}" for s in SPLITS)]
        counts = [self.split(s).group_counts() for s in SPLITS]
        for gi, n in enumerate(names):
            lines.append(f"{n:<{w}}  " + "  ".join(f"{int(c[gi]):>7}" for c in counts))
        return "\n".join(lines)

    def check_counts(self, expected: dict[str, Sequence[int]], log=print) -> bool:
        """Warn (via `log`) when per-group counts differ from the known ones; return True if equal."""
        ok = True
        for s, exp in expected.items():
            got = self.split(s).group_counts().tolist()
            if list(exp) != got:
                ok = False
                log(f"warning: {self.name} {s} group counts {got} differ from the known {list(exp)}")
        return ok


def _leaf_digest(h: Any, v: Any) -> None:
    """Feed one input leaf into hash `h`: array bytes, or a lazy array's own `cache_key()`."""
    if hasattr(v, "cache_key"):
        h.update(f"lazy:{v.cache_key()}".encode())
    elif isinstance(v, (np.ndarray, np.generic, jax.Array)):
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    else:
        h.update(f"{type(v).__name__}:{len(v)}".encode())


def dataset_fingerprint(ds: GroupDataset) -> str:
    """16 hex digits identifying `ds`: its name, names, `info`, and every split's labels,
    attributes, group masks and inputs (array bytes; lazy images by their items and decoding
    settings). Caches built from a dataset are keyed by it."""
    import hashlib

    h = hashlib.sha256()
    h.update(repr((ds.name, ds.input_kind, tuple(ds.class_names), tuple(ds.attr_names))).encode())
    for k, v in sorted(ds.info.items()):
        h.update(f"info:{k}".encode())
        for leaf in jax.tree.leaves(v):  # arrays (a features file's head) by their bytes
            if isinstance(leaf, np.ndarray):
                _leaf_digest(h, leaf)
            else:
                h.update(repr(leaf).encode())
    for s in SPLITS:
        sp = ds.split(s)
        for arr in (sp.y, sp.a) + (() if sp.group_masks is None else (sp.group_masks,)):
            _leaf_digest(h, arr)  # a guarded (unreadable) `a` is hashed by its type and length
        for leaf in jax.tree.leaves(sp.x):
            _leaf_digest(h, leaf)
    return h.hexdigest()[:16]
