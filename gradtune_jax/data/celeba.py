"""CelebA-Blond and CelebA-Age from the original txt or the Kaggle CSV files (or TFDS `celeb_a`).

Files in `data_dir`: `list_attr_celeba.txt` (line 1 the count, line 2 the 40 attribute names,
then `filename v1 .. v40` in -1/1) or `list_attr_celeba.csv` (`image_id` + 40 columns);
`list_eval_partition.txt` (`filename 0|1|2`) or `list_eval_partition.csv` (`image_id,partition`);
images in `img_align_celeba/` (Kaggle's nested `img_align_celeba/img_align_celeba/` also works).

- CelebA-Blond: y = Blond_Hair, a = Male.
- CelebA-Age: y = Young, a = Male; the train split is subsampled (seeded) so that within each class
  majority : minority = `ratio` : 1 (young-female and old-male are the majorities) with
  balanced classes; val and test are kept whole.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import SPLITS, GroupDataset, Split
from gradtune_jax.data.files import (SPLIT_CODES, check_images, find_file, parse_codes, parse_ints, read_csv,
                                     report_counts, require_dir, split_indices)
from gradtune_jax.data.images import LazyImages
from gradtune_jax.errors import UserError

TARGETS = {"blond": "Blond_Hair", "age": "Young"}
SPURIOUS = "Male"
BLOND_COUNTS = {"train": (71629, 66874, 22880, 1387), "val": (8535, 8276, 2874, 182),
                "test": (9767, 7535, 2480, 180)}
SPLIT_SIZES = {"train": 162770, "val": 19867, "test": 19962}
NAMES = {
    "blond": dict(class_names=("not_blond", "blond"), attr_names=("female", "male"),
                  group_names=("not_blond/female", "not_blond/male", "blond/female", "blond/male")),
    "age": dict(class_names=("old", "young"), attr_names=("female", "male"),
                group_names=("old/female", "old/male", "young/female", "young/male")),
}


def _read_attr_txt(path: str, wanted: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise UserError(f"{path}: expected a count line, an attribute-name line and one line per image")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise UserError(f"{path}: line 1 must be the number of images, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    cols = _columns(path, names, wanted)
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise UserError(f"{path}: line 1 says {count} images but {len(rows)} rows follow")
    bad = [i for i, r in enumerate(rows) if len(r) != len(names) + 1]
    if bad:
        raise UserError(f"{path}: line {bad[0] + 3} has {len(rows[bad[0]])} fields, expected a file name "
                        f"and {len(names)} values")
    files = [r[0] for r in rows]
    vals = np.stack([parse_ints([r[c + 1] for r in rows], path, names[c], (-1, 1)) for c in cols], 1)
    return files, vals


def _columns(path: str, names: list[str], wanted: tuple[str, ...]) -> list[int]:
    missing = [w for w in wanted if w not in names]
    if missing:
        raise UserError(f"{path}: attribute(s) {', '.join(missing)} not in the header; expected CelebA's 40 "
                        f"attribute names")
    return [names.index(w) for w in wanted]


def read_celeba_files(data_dir: str, wanted: tuple[str, ...]) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """`(image folder, file names, attributes (N, len(wanted)) in {0, 1}, split codes (N,))`."""
    attr_path = find_file(data_dir, ("list_attr_celeba.txt", "list_attr_celeba.csv"),
                          "CelebA's list_attr_celeba.txt (or Kaggle's list_attr_celeba.csv)")
    part_path = find_file(data_dir, ("list_eval_partition.txt", "list_eval_partition.csv"),
                          "CelebA's list_eval_partition.txt (or Kaggle's list_eval_partition.csv)")
    if attr_path.endswith(".txt"):
        files, vals = _read_attr_txt(attr_path, wanted)
    else:
        cols = read_csv(attr_path, ("image_id", *wanted))
        files = cols["image_id"]
        vals = np.stack([parse_ints(cols[w], attr_path, w, (-1, 1)) for w in wanted], 1)
    if part_path.endswith(".txt"):
        with open(part_path) as f:
            rows = [ln.split() for ln in f if ln.strip()]
        bad = [i for i, r in enumerate(rows) if len(r) != 2]
        if bad:
            raise UserError(f"{part_path}: line {bad[0] + 1} must be 'filename split', got {' '.join(rows[bad[0]])!r}")
        pfiles, pcodes = [r[0] for r in rows], [r[1] for r in rows]
    else:
        cols = read_csv(part_path, ("image_id", "partition"))
        pfiles, pcodes = cols["image_id"], cols["partition"]
    codes = dict(zip(pfiles, parse_codes(pcodes, part_path, "partition", SPLIT_CODES)))
    missing = [f for f in files if f not in codes]
    if missing:
        raise UserError(f"{part_path}: no partition for {len(missing)} image(s) of {os.path.basename(attr_path)}, "
                        f"e.g. {', '.join(missing[:3])}")
    split = np.array([codes[f] for f in files], np.int64)
    img_dir = os.path.join(data_dir, "img_align_celeba")
    if os.path.isdir(os.path.join(img_dir, "img_align_celeba")):
        img_dir = os.path.join(img_dir, "img_align_celeba")
    if not os.path.isdir(img_dir):
        raise UserError(f"{img_dir}: folder not found; expected the CelebA images (img_align_celeba/*.jpg)")
    return img_dir, files, (vals > 0).astype(np.int64), split


def age_subsample(y: np.ndarray, a: np.ndarray, seed: int, minority_per_class: int = 5000,
                  ratio: int = 4, log: Callable[[str], None] = print) -> np.ndarray:
    """Sorted indices of the CelebA-Age train subsample: per class `k` minority and `ratio * k`
    majority examples (majorities: old-male, young-female), the same `k` in both classes,
    `k = minority_per_class` or the most the data allows."""
    y, a = np.asarray(y), np.asarray(a)
    groups = {"old/female": (0, 0), "old/male": (0, 1), "young/female": (1, 0), "young/male": (1, 1)}
    pools = {g: np.flatnonzero((y == c) & (a == s)) for g, (c, s) in groups.items()}
    majority = ("old/male", "young/female")
    k = min([minority_per_class] + [len(pools[g]) // ratio if g in majority else len(pools[g]) for g in groups])
    if k < 1:
        sizes = {g: len(p) for g, p in pools.items()}
        raise UserError(f"CelebA-Age: train groups {sizes} are too small for a {ratio}:1 subsample")
    if k < minority_per_class:
        log(f"CelebA-Age: only {k} minority examples per class available (asked for {minority_per_class})")
    rng = np.random.default_rng([seed, 39])
    pick = [rng.choice(pools[g], size=k * ratio if g in majority else k, replace=False) for g in groups]
    idx = np.sort(np.concatenate(pick))
    got = np.bincount(2 * y[idx] + a[idx], minlength=4).tolist()
    log(f"CelebA-Age train subsample (seed {seed}, {ratio}:1 within class): {dict(zip(groups, got))} "
        f"of {[len(p) for p in pools.values()]}")
    return idx


def build_celeba(target: str, per_split: dict[str, tuple[Any, np.ndarray, np.ndarray]], info: dict,
                 subsample_seed: int, minority_per_class: int, ratio: int, verbose: bool) -> GroupDataset:
    """Assemble the dataset from per-split `(images, y, a)`; applies the CelebA-Age subsample.
    `images` is a `LazyImages` (or anything with `subset`)."""
    splits = {}
    for s in SPLITS:
        x, y, a = per_split[s]
        if target == "age" and s == "train":
            idx = age_subsample(y, a, subsample_seed, minority_per_class, ratio,
                                log=print if verbose else (lambda _: None))
            x, y, a = x.subset(idx), y[idx], a[idx]
            info = {**info, "age_subsample": {"seed": subsample_seed, "ratio": ratio,
                                              "counts": np.bincount(2 * y + a, minlength=4).tolist()}}
        splits[s] = Split(x=x, y=y, a=a, n_classes=2, n_attrs=2)
    ds = GroupDataset(name=f"celeba_{target}", **splits, **NAMES[target], input_kind="image", info=info)
    known = BLOND_COUNTS if target == "blond" else None  # TFDS celeb_a uses the official partition too
    totals = {s: n for s, n in SPLIT_SIZES.items() if not (target == "age" and s == "train")}
    ds.info["counts_match_known"] = report_counts(ds, known, totals, verbose=verbose)
    return ds


def load_celeba(data_dir: str | None = None, target: str = "blond", image_size: int = 224, *, source: str = "files",
                square: str = "crop", crop_fraction: float = 1.0, cache_dir: str | None = None,
                subsample_seed: int = 0, minority_per_class: int = 5000, ratio: int = 4,
                check_files: bool = True, num_workers: int | None = None, verbose: bool = True) -> GroupDataset:
    """CelebA with y = Blond_Hair (`target="blond"`) or Young (`"age"`) and a = Male.

    Args:
      data_dir: folder with the attribute/partition files and `img_align_celeba/`
        (for `source="tfds"`: the TFDS data dir holding a prepared `celeb_a`).
      image_size: side of the square float32 [0, 1] images (central square crop, then resize).
      source: "files" or "tfds".
      cache_dir: decode every image once into uint8 `.npy` caches there and reuse them.
      subsample_seed, minority_per_class, ratio: the CelebA-Age train subsample.
      check_files: verify that every listed image exists.
      verbose: print the counts and the subsample.
    """
    if target not in TARGETS:
        raise UserError(f"CelebA target must be one of {sorted(TARGETS)}, got {target!r}")
    if source == "tfds":
        from gradtune_jax.data.tfds_source import celeba_tfds_splits

        per_split, info = celeba_tfds_splits(data_dir, TARGETS[target], SPURIOUS, image_size, square=square,
                                             crop_fraction=crop_fraction, num_workers=num_workers)
    elif source == "files":
        data_dir = require_dir(data_dir, f"celeba_{target}", "a folder with list_attr_celeba.txt, "
                               "list_eval_partition.txt and img_align_celeba/")
        img_dir, files, attrs, split = read_celeba_files(data_dir, (TARGETS[target], SPURIOUS))
        if check_files:
            check_images(img_dir, files)
        parts = split_indices(split, os.path.join(data_dir, "list_eval_partition.*"))
        per_split = {s: (LazyImages([files[i] for i in idx], image_size, root=img_dir, square=square,
                                    crop_fraction=crop_fraction, num_workers=num_workers),
                         attrs[idx, 0], attrs[idx, 1]) for s, idx in parts.items()}
        info = {"source": "files", "root": data_dir}
    else:
        raise UserError(f"source must be 'files' or 'tfds', got {source!r}")
    info.update(image_size=image_size, square=square, crop_fraction=crop_fraction, cache_dir=cache_dir)
    ds = build_celeba(target, per_split, info, subsample_seed, minority_per_class, ratio, verbose)
    if cache_dir is not None:
        for s in SPLITS:
            ds.split(s).x.cache_to(cache_dir, tag=f"celeba_{info['source']}_{s}", progress=verbose)
    return ds


def load_celeba_blond(data_dir: str | None = None, image_size: int = 224, **kwargs: Any) -> GroupDataset:
    """CelebA-Blond: y = Blond_Hair, a = Male (see `load_celeba`)."""
    return load_celeba(data_dir, "blond", image_size, **kwargs)


def load_celeba_age(data_dir: str | None = None, image_size: int = 224, **kwargs: Any) -> GroupDataset:
    """CelebA-Age: y = Young, a = Male, seeded 4:1 within-class train subsample (see `load_celeba`)."""
    return load_celeba(data_dir, "age", image_size, **kwargs)
