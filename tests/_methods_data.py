"""Small hand-made data for the baseline-method tests: feature sets and a tiny image dataset."""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.features import FeatureSet, make_feature_set

COUNTS = {"train": (60, 6, 4, 30), "val": (40, 40, 20, 20), "test": (30, 30, 30, 30)}


def _split(counts, rng, dim: int, image: bool) -> Split:
    y = np.concatenate([np.full(n, g // 2) for g, n in enumerate(counts)])
    a = np.concatenate([np.full(n, g % 2) for g, n in enumerate(counts)])
    if image:
        x = rng.normal(0, 0.1, (len(y), 8, 8, 3)).astype(np.float32)
        x[..., 0] += a[:, None, None]  # spurious: colour
        x[:, 2:6, 2:6, 1] += y[:, None, None]  # core: a square
    else:
        x = rng.normal(0, 1, (len(y), dim)).astype(np.float32)
        x[:, 0] += 2.0 * (2 * y - 1)  # core
        x[:, 1] += 3.0 * (2 * a - 1)  # spurious
    return Split(x=x, y=y.astype(np.int64), a=a.astype(np.int64), n_classes=2, n_attrs=2)


def dataset(seed: int = 0, dim: int = 8, image: bool = False) -> GroupDataset:
    rng = np.random.default_rng(seed)
    splits = {s: _split(c, rng, dim, image) for s, c in COUNTS.items()}
    return GroupDataset(name="toy", **splits, class_names=("0", "1"), attr_names=("0", "1"),
                        input_kind="image" if image else "features")


def feature_set(seed: int = 0, dim: int = 8) -> FeatureSet:
    """Features where the ERM head leans on the spurious coordinate."""
    ds = dataset(seed, dim)
    kernel = np.zeros((dim, 2), np.float32)
    kernel[0] = [-0.5, 0.5]
    kernel[1] = [-1.0, 1.0]
    return make_feature_set(ds, {"kernel": kernel, "bias": np.zeros(2, np.float32)}, seed)


def poison_groups(ds: GroupDataset, split: str, idx: np.ndarray | None = None, seed: int = 1) -> GroupDataset:
    """`ds` with the spurious attribute of `split` (at `idx`, default all) replaced by noise."""
    sp = ds.split(split)
    a = sp.a.copy()
    idx = np.arange(len(a)) if idx is None else idx
    a[idx] = np.random.default_rng(seed).integers(0, 2, len(idx))
    return dataclasses.replace(ds, **{split: dataclasses.replace(sp, a=a)})
