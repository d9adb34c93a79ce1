"""Precomputed features (bring your own embeddings) from one `.npz` file.

Arrays: `features (N, D)`, `y (N,)` class ids, `split (N,)` in {0 train, 1 val, 2 test}, optional
`a (N,)` spurious attribute or `g (N,)` group id (`g = y * n_attrs + a`), optional
`head_kernel (D, C)` + `head_bias (C,)` of an existing ERM head, optional `class_names`,
`attr_names` (string arrays). The head is exposed as `ds.info["head"]` (`{"kernel", "bias"}`) so
last-layer methods can start from it. Without `a`/`g` every class is one group.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.data.files import report_counts, split_indices
from gradtune_jax.data.validate import check_finite
from gradtune_jax.errors import UserError

REQUIRED = ("features", "y", "split")


def _int_array(z: dict, key: str, path: str, n: int) -> np.ndarray:
    v = np.asarray(z[key])
    if v.shape != (n,):
        raise UserError(f"{path}: {key} must have shape ({n},) like features' first axis, got {v.shape}")
    if v.dtype.kind not in "iub" and not (v.dtype.kind == "f" and np.all(v == np.round(v))):
        raise UserError(f"{path}: {key} must hold integers, got dtype {v.dtype}")
    v = v.astype(np.int64)
    if v.size and v.min() < 0:
        raise UserError(f"{path}: {key} must be >= 0, got {v.min()}")
    return v


def _resolve(path: str | None, data_dir: str | None) -> str:
    p = path or data_dir
    if p is None:
        raise UserError("features: give path= (an .npz file) or data_dir= (a folder with features.npz)")
    if os.path.isdir(p):
        p = os.path.join(p, "features.npz")
    if not os.path.isfile(p):
        raise UserError(f"{p}: file not found; expected an .npz with arrays {', '.join(REQUIRED)}")
    return p


def load_features(path: str | None = None, *, data_dir: str | None = None, n_attrs: int | None = None,
                  name: str = "features", verbose: bool = True) -> GroupDataset:
    """A features `GroupDataset` (input_kind "features") from an `.npz` file.

    Args:
      path: the `.npz` file (or a folder holding `features.npz`); `data_dir` is an alias.
      n_attrs: number of attribute values when only `g` is given (default: inferred).
      name: the dataset name.
      verbose: print per-split group counts.
    """
    path = _resolve(path, data_dir)
    try:
        with np.load(path, allow_pickle=False) as f:
            z = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    missing = [k for k in REQUIRED if k not in z]
    if missing:
        raise UserError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(sorted(z)) or 'none'}")
    feats = np.asarray(z["features"])
    if feats.ndim != 2 or feats.dtype.kind not in "fiu":
        raise UserError(f"{path}: features must be a numeric (N, D) array, got {feats.dtype} {feats.shape}")
    n, d = feats.shape
    check_finite(feats, path, "features")  # NaN/inf would train silently and fail much later
    y = _int_array(z, "y", path, n)
    split = _int_array(z, "split", path, n)
    if split.size and split.max() > 2:
        raise UserError(f"{path}: split must be 0 (train), 1 (val) or 2 (test), got {sorted(set(split.tolist()) - {0, 1, 2})}")
    head = None
    if ("head_kernel" in z) != ("head_bias" in z):
        raise UserError(f"{path}: give both head_kernel (D, C) and head_bias (C,) or neither")
    n_classes = int(y.max()) + 1 if n else 1
    if "head_kernel" in z:
        k, b = np.asarray(z["head_kernel"], np.float32), np.asarray(z["head_bias"], np.float32)
        check_finite(k, path, "head_kernel")
        check_finite(b, path, "head_bias")
        if k.ndim != 2 or k.shape[0] != d or b.shape != (k.shape[1],):
            raise UserError(f"{path}: head_kernel must be ({d}, C) and head_bias (C,), got {k.shape} and {b.shape}")
        if k.shape[1] < n_classes:
            raise UserError(f"{path}: the head has {k.shape[1]} classes but y goes up to {n_classes - 1}")
        n_classes = k.shape[1]
        head = {"kernel": k, "bias": b}
    if "a" in z:
        a = _int_array(z, "a", path, n)
        n_attrs = max(n_attrs or 0, int(a.max()) + 1 if n else 1)
    elif "g" in z:
        g = _int_array(z, "g", path, n)
        n_attrs = n_attrs or max(1, -(-(int(g.max()) + 1) // n_classes))
        if np.any(g // n_attrs != y):
            raise UserError(f"{path}: g must equal y * n_attrs + a with n_attrs={n_attrs}; "
                            f"got g={g[g // n_attrs != y][0]} for y={y[g // n_attrs != y][0]}")
        a = g % n_attrs
    else:
        a, n_attrs = np.zeros(n, np.int64), 1
        if verbose:
            print(f"{path}: no a or g array; each class is one group (WGA = worst-class accuracy)")
    class_names = tuple(str(c) for c in z["class_names"]) if "class_names" in z else tuple(
        f"class{c}" for c in range(n_classes))
    attr_names = tuple(str(c) for c in z["attr_names"]) if "attr_names" in z else tuple(
        f"attr{c}" for c in range(n_attrs))
    if len(class_names) != n_classes or len(attr_names) != n_attrs:
        raise UserError(f"{path}: class_names/attr_names must have {n_classes}/{n_attrs} entries, "
                        f"got {len(class_names)}/{len(attr_names)}")
    parts = split_indices(split, path)
    x = feats.astype(np.float32)
    splits = {s: Split(x=x[idx], y=y[idx], a=a[idx], n_classes=n_classes, n_attrs=n_attrs)
              for s, idx in parts.items()}
    ds = GroupDataset(name=name, **splits, class_names=class_names, attr_names=attr_names, input_kind="features",
                      info={"source": "npz", "path": path, "head": head, "dim": d})
    report_counts(ds, verbose=verbose)
    return ds
