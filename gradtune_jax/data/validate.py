"""Checks a loaded `GroupDataset` passes before any work. `validate` (called by
`registry.load_dataset`, so every loader): non-empty splits, labels and attributes in range,
finite inputs. `check_classes` (called by the experiment CLIs right after loading): every class
present in train and validation. Each problem is one `UserError` line naming the dataset's file
(or name) and what was expected. Empty *groups* are allowed (WGA is taken over the groups
present), empty classes are not (class-balanced training and the held-out fine-tuning need them).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gradtune_jax.data.dataset import SPLITS, GroupDataset
from gradtune_jax.errors import UserError

__all__ = ["check_classes", "check_finite", "dataset_source", "validate"]


def dataset_source(ds: GroupDataset) -> str:
    """How messages name `ds`: its file or folder when the loader recorded one, else its name."""
    for key in ("path", "root", "data_dir"):
        v = ds.info.get(key)
        if isinstance(v, str) and v:
            return v
    return f"dataset {ds.name}"


def check_finite(arr_ND: Any, where: str, what: str = "features") -> None:
    """`UserError` if a float array holds NaN or +-inf: names `where`, the count and the first row."""
    a = np.asarray(arr_ND)
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    bad = ~np.isfinite(a)
    if bad.any():
        n_bad = int(bad.sum())
        first = np.argwhere(bad)[0]
        kinds = sorted({"NaN" if np.isnan(v) else "inf" for v in a[bad][:1000]})
        pos = f"row {int(first[0])}" + (f", column {int(first[1])}" if len(first) > 1 else "")
        raise UserError(f"{where}: {what} has {n_bad} non-finite value(s) ({'/'.join(kinds)}; first at {pos}); "
                        f"expected finite numbers")


def _check_range(values: Any, n: int, where: str, name: str, split: str, meaning: str) -> None:
    v = np.asarray(values)
    if v.size == 0:
        return
    if v.dtype.kind not in "iub":
        if v.dtype.kind != "f" or not np.all(v == np.round(v)):
            raise UserError(f"{where}: {split} {name} must hold integers ({meaning}), got dtype {v.dtype}")
    bad = (v < 0) | (v >= n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where}: {split} {name} must be in [0, {n}) ({meaning}); got {v[i].item()!r} at row {i}"
                        f" ({int(bad.sum())} row(s) out of range)")


def _plain_array(x: Any) -> bool:
    """A materialised numeric array (lazy loaders and token dicts of ints are not checked)."""
    return isinstance(x, (np.ndarray, jax.Array)) and np.asarray(x).dtype.kind in "fc"


def validate(ds: GroupDataset) -> GroupDataset:
    """Check `ds` (see the module docstring) and return it unchanged; raises `UserError`."""
    where = dataset_source(ds)
    empty = [s for s in SPLITS if len(ds.split(s)) == 0]
    if empty:
        raise UserError(f"{where}: split(s) {', '.join(empty)} have no examples; expected examples in train, val "
                        f"and test")
    n_classes = ds.train.n_classes
    if n_classes < 2:
        raise UserError(f"{where}: {n_classes} class(es); expected at least 2 classes")
    for s in SPLITS:
        sp = ds.split(s)
        if sp.n_classes != n_classes or sp.n_attrs != ds.train.n_attrs:
            raise UserError(f"{where}: {s} has {sp.n_classes} classes / {sp.n_attrs} attribute values, train has "
                            f"{n_classes} / {ds.train.n_attrs}; expected the same in every split")
        _check_range(sp.y, n_classes, where, "y", s, f"{n_classes} classes")
        a = sp.a
        if isinstance(a, (np.ndarray, list, tuple)):  # a guarded (hidden) attribute is not read
            _check_range(a, sp.n_attrs, where, "a", s, f"{sp.n_attrs} attribute values")
        if sp.group_masks is not None:
            gm = np.asarray(sp.group_masks)
            if gm.ndim != 2 or gm.shape[0] != len(sp):
                raise UserError(f"{where}: {s} group_masks must be ({len(sp)}, G), got {gm.shape}")
        for leaf in jax.tree.leaves(sp.x):
            if _plain_array(leaf):
                check_finite(leaf, where, f"{s} inputs" if ds.input_kind != "features" else f"{s} features")
    head = ds.info.get("head")
    if isinstance(head, dict):
        for k, v in head.items():
            check_finite(v, where, f"head_{k}")
    return ds


def check_classes(ds: GroupDataset) -> GroupDataset:
    """`UserError` unless every class has an example in train and in val: ERM's class-balanced
    sampler and the held-out fine-tuning set (half of val) need them. The experiment CLIs call it
    right after loading; `validate` does not, so a loader can still read a tiny file."""
    for s in ("train", "val"):
        counts = np.bincount(np.asarray(ds.split(s).y, np.int64), minlength=ds.n_classes)
        missing = [str(ds.class_names[c]) if c < len(ds.class_names) else str(c) for c in np.flatnonzero(counts == 0)]
        if missing:
            raise UserError(f"{dataset_source(ds)}: the {s} split has no example of class(es) {', '.join(missing)}; "
                            f"expected every class in train and val (training and the held-out fine-tuning set are "
                            f"class-balanced)")
    return ds
