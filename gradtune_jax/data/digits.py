"""The embedded default: Waterbirds-shaped digits (no download).

Built from scikit-learn's bundled `load_digits()` (1,797 real 8x8 digits). Class y = digit >= 5
("landbird" 0 / "waterbird" 1); the spurious attribute a is the background colour ("land" /
"water"), which agrees with y in 95% of train (Waterbirds' exact train group counts) and is
independent of y in val and test (Waterbirds' val and test counts). Train, val and test draw
their source digits from disjoint subsets; more images than sources are made by seeded light
augmentation (shift, stroke intensity, pixel noise).

`load_source_digits` and `compose_splits` are the shared machinery of every digits-based dataset
(`digits_celeba.py` builds the CelebA-shaped one with them).
"""
from __future__ import annotations

import numpy as np

from typing import Callable, Mapping, Sequence

from gradtune_jax.data.dataset import GroupDataset, Split

WATERBIRDS_COUNTS = {
    "train": (3498, 184, 56, 1057),
    "val": (467, 466, 133, 133),
    "test": (2255, 2255, 642, 642),
}
SOURCE_FRACTIONS = {"train": 0.5, "val": 0.2, "test": 0.3}
# Background colours (RGB) of the two "places"; jittered per image.
PLACE_RGB = np.array([[0.55, 0.45, 0.20], [0.20, 0.40, 0.65]], np.float32)


def _render(digits_8: np.ndarray, place: np.ndarray, size: int, rng: np.random.Generator,
            noise: float, shift: int, bg_jitter: float) -> np.ndarray:
    """Compose digits (N, 8, 8) in [0, 1] onto jittered place colours; returns (N, size, size, 3)."""
    n = len(digits_8)
    scale = size // 8
    up = np.kron(digits_8, np.ones((1, scale, scale), np.float32))  # (N, 8s, 8s)
    canvas = np.zeros((n, size, size), np.float32)
    pad = (size - up.shape[1]) // 2
    canvas[:, pad:pad + up.shape[1], pad:pad + up.shape[2]] = up
    dx, dy = rng.integers(-shift, shift + 1, size=(2, n))
    for i in range(n):  # small N (thousands), vectorising the roll is not worth it
        canvas[i] = np.roll(canvas[i], (dy[i], dx[i]), axis=(0, 1))
    ink = canvas * rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    bg = PLACE_RGB[place] + rng.normal(0.0, bg_jitter, size=(n, 3)).astype(np.float32)
    img = bg[:, None, None, :] * (1.0 - ink[..., None]) + ink[..., None] * 0.95
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def source_partition(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint source-digit indices for train / val / test (fractions `SOURCE_FRACTIONS`)."""
    perm = rng.permutation(n)
    cut1 = int(SOURCE_FRACTIONS["train"] * n)
    cut2 = cut1 + int(SOURCE_FRACTIONS["val"] * n)
    return {"train": perm[:cut1], "val": perm[cut1:cut2], "test": perm[cut2:]}


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 8, 8) in [0, 1] and class y = digit >= 5."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = (digits.images / 16.0).astype(np.float32)
    labels = (digits.target >= 5).astype(np.int64)
    return imgs, labels


# render(digits_N88, a_N) -> images (N, H, W, 3); it draws its randomness from the shared generator.
RenderFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def compose_splits(imgs: np.ndarray, labels: np.ndarray, counts: Mapping[str, Sequence[int]],
                   rng: np.random.Generator, render: RenderFn) -> dict[str, Split]:
    """Train / val / test splits with exactly `counts[split][g]` examples of group g = 2 y + a.

    Source digits are partitioned first (`source_partition`, disjoint across splits); each group
    draws its sources from its split's subset with class y (with replacement only when it needs
    more than the subset has) and `render`s them with attribute a; each split is then shuffled.
    Every random choice comes from `rng`, in a fixed order.
    """
    sources = source_partition(len(imgs), rng)
    splits = {}
    for name, src in sources.items():
        xs, ys, as_ = [], [], []
        for gid, n in enumerate(counts[name]):
            y, a = divmod(gid, 2)
            pool = src[labels[src] == y]
            pick = rng.choice(pool, size=n, replace=n > len(pool))
            xs.append(render(imgs[pick], np.full(n, a)))
            ys.append(np.full(n, y, np.int64))
            as_.append(np.full(n, a, np.int64))
        order = rng.permutation(sum(counts[name]))
        splits[name] = Split(x=np.concatenate(xs)[order], y=np.concatenate(ys)[order],
                             a=np.concatenate(as_)[order], n_classes=2, n_attrs=2)
    return splits


def check_size(size: int) -> None:
    """Image sides are positive multiples of 8 (the digits are 8x8, upscaled by an integer)."""
    if size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size}")


def make_digits_waterbirds(seed: int = 0, size: int = 16, noise: float = 0.02, shift: int = 1,
                           bg_jitter: float = 0.2, counts: dict | None = None) -> GroupDataset:
    """Build the Waterbirds-shaped digits dataset, deterministic in `seed`.

    Args:
      seed: seed of the source partition and of every augmentation.
      size: image side (a multiple of 8, >= 8).
      noise: std of the per-pixel Gaussian noise.
      shift: max absolute translation in pixels.
      bg_jitter: std of the per-image background colour jitter.
      counts: per-split group counts (default: Waterbirds').
    """
    check_size(size)
    counts = dict(WATERBIRDS_COUNTS if counts is None else counts)
    imgs, labels = load_source_digits()
    rng = np.random.default_rng(seed)
    splits = compose_splits(imgs, labels, counts, rng,
                            lambda d, a: _render(d, a, size, rng, noise, shift, bg_jitter))
    return GroupDataset(
        name="digits", **splits, class_names=("landbird", "waterbird"), attr_names=("land", "water"),
        group_names=("landbird/land", "landbird/water", "waterbird/land", "waterbird/water"),
        input_kind="image",
        info={"seed": seed, "size": size, "noise": noise, "shift": shift, "bg_jitter": bg_jitter,
              "source": "sklearn.datasets.load_digits"},
    )
