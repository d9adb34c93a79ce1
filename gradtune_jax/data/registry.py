"""Dataset registry: `load_dataset(name, **kwargs) -> GroupDataset`. The default is the embedded
Waterbirds-shaped digits, which needs no download."""
from __future__ import annotations

from typing import Callable

from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.data.digits import make_digits_waterbirds

DEFAULT_DATASET = "digits"
_LOADERS: dict[str, Callable[..., GroupDataset]] = {"digits": make_digits_waterbirds}


def register_dataset(name: str, loader: Callable[..., GroupDataset]) -> None:
    """Register `loader(**kwargs) -> GroupDataset` under `name`."""
    _LOADERS[name] = loader


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(name: str = DEFAULT_DATASET, **kwargs) -> GroupDataset:
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    return _LOADERS[name](**kwargs)
