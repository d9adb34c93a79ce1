"""Dataset registry: `load_dataset(name, **kwargs) -> GroupDataset`. The default is the embedded
Waterbirds-shaped digits, which needs no download; the real datasets read the user's files
(`data_dir`, plus options such as `image_size`, `tokenizer_dir`, `source`)."""
from __future__ import annotations

import functools
from typing import Callable

from gradtune_jax.data.celeba import load_celeba_age, load_celeba_blond
from gradtune_jax.data.civilcomments import load_civilcomments
from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.data.digits import WATERBIRDS_COUNTS, make_digits_waterbirds
from gradtune_jax.data.digits_celeba import CELEBA_COUNTS, make_digits_celeba
from gradtune_jax.data.files import report_counts
from gradtune_jax.data.features import load_features
from gradtune_jax.data.multinli import load_multinli
from gradtune_jax.data.validate import validate
from gradtune_jax.data.waterbirds import load_waterbirds

DEFAULT_DATASET = "digits"


def load_digits_waterbirds(verbose: bool = True, **kwargs) -> GroupDataset:
    """The embedded dataset, with its per-split group counts printed like every other loader."""
    ds = make_digits_waterbirds(**kwargs)
    report_counts(ds, WATERBIRDS_COUNTS if "counts" not in kwargs else None, verbose=verbose)
    return ds


def load_digits_celeba(verbose: bool = True, **kwargs) -> GroupDataset:
    """The embedded CelebA-Blond-shaped digits (`make_digits_celeba`), counts printed and checked."""
    ds = make_digits_celeba(**kwargs)
    report_counts(ds, CELEBA_COUNTS if "counts" not in kwargs else None, verbose=verbose)
    return ds


_LOADERS: dict[str, Callable[..., GroupDataset]] = {
    "digits": load_digits_waterbirds,
    "digits_celeba": load_digits_celeba,
    "waterbirds": load_waterbirds,
    "celeba_blond": load_celeba_blond,
    "celeba_age": load_celeba_age,
    "multinli": load_multinli,
    "civilcomments": functools.partial(load_civilcomments, grouping="4"),
    "civilcomments_wilds": functools.partial(load_civilcomments, grouping="wilds16"),
    "features": load_features,
}


def register_dataset(name: str, loader: Callable[..., GroupDataset]) -> None:
    """Register `loader(**kwargs) -> GroupDataset` under `name`."""
    _LOADERS[name] = loader


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(name: str = DEFAULT_DATASET, **kwargs) -> GroupDataset:
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    return validate(_LOADERS[name](**kwargs))  # bad labels, NaN inputs, empty splits: one line, before any work
