"""Waterbirds in the group_DRO / WILDS layout: `metadata.csv` + images in sub-folders, any size.

`metadata.csv` columns `img_filename` (relative to the folder), `y` (0 landbird, 1 waterbird),
`split` (0 train, 1 val, 2 test), `place` (0 land, 1 water); `img_id`, `place_filename` are
optional. Groups: 0 landbird-land, 1 landbird-water, 2 waterbird-land, 3 waterbird-water.
"""
from __future__ import annotations

import os

from gradtune_jax.data.dataset import SPLITS, GroupDataset, Split
from gradtune_jax.data.digits import WATERBIRDS_COUNTS
from gradtune_jax.data.files import (SPLIT_CODES, check_images, parse_codes, parse_ints, read_csv,
                                     report_counts, require_dir, split_indices)
from gradtune_jax.data.images import LazyImages
from gradtune_jax.errors import UserError

FOLDER = "waterbird_complete95_forest2water2"
COLUMNS = ("img_filename", "y", "split", "place")


def find_waterbirds_root(data_dir: str) -> str:
    """`data_dir` itself if it holds `metadata.csv`, else its `waterbird_complete95_forest2water2/`."""
    for d in (data_dir, os.path.join(data_dir, FOLDER)):
        if os.path.isfile(os.path.join(d, "metadata.csv")):
            return d
    raise UserError(f"{data_dir}: no metadata.csv here or in {FOLDER}/; expected the Waterbirds layout "
                    f"(metadata.csv with columns {', '.join(COLUMNS)} and the images it lists)")


def load_waterbirds(data_dir: str | None = None, image_size: int = 224, *, square: str = "stretch",
                    crop_fraction: float = 224 / 256, cache_dir: str | None = None,
                    check_files: bool = True, num_workers: int | None = None,
                    verbose: bool = True) -> GroupDataset:
    """Waterbirds (or any folder in its layout) with lazily decoded images.

    Args:
      data_dir: the folder with `metadata.csv`, or its parent.
      image_size: side of the square float32 [0, 1] images.
      square, crop_fraction: see `LazyImages`; the default is group_DRO's eval transform
        (resize to 256/224 of the target, central crop).
      cache_dir: if given, decode every image once into a uint8 `.npy` cache there and reuse it.
      check_files: verify that every listed image exists.
      verbose: print per-split group counts (and warn when they differ from Waterbirds').
    """
    data_dir = require_dir(data_dir, "waterbirds", f"a folder with metadata.csv (or {FOLDER}/metadata.csv)")
    root = find_waterbirds_root(data_dir)
    meta_path = os.path.join(root, "metadata.csv")
    cols = read_csv(meta_path, COLUMNS)
    y = parse_ints(cols["y"], meta_path, "y", (0, 1))
    a = parse_ints(cols["place"], meta_path, "place", (0, 1))
    split = parse_codes(cols["split"], meta_path, "split", SPLIT_CODES)
    files = cols["img_filename"]
    if check_files:
        check_images(root, files)
    parts = split_indices(split, meta_path)
    splits = {}
    for s in SPLITS:
        idx = parts[s]
        x = LazyImages([files[i] for i in idx], image_size, root=root, square=square,
                       crop_fraction=crop_fraction, num_workers=num_workers)
        if cache_dir is not None:
            x.cache_to(cache_dir, tag=f"waterbirds_{s}", progress=verbose)
        splits[s] = Split(x=x, y=y[idx], a=a[idx], n_classes=2, n_attrs=2)
    ds = GroupDataset(
        name="waterbirds", **splits, class_names=("landbird", "waterbird"), attr_names=("land", "water"),
        group_names=("landbird/land", "landbird/water", "waterbird/land", "waterbird/water"),
        input_kind="image",
        info={"source": "files", "root": root, "image_size": image_size, "square": square,
              "crop_fraction": crop_fraction, "cache_dir": cache_dir},
    )
    ds.info["counts_match_known"] = report_counts(ds, WATERBIRDS_COUNTS, verbose=verbose)
    return ds

