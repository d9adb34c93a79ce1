"""Build a classifier by name, so configs and the CLI can pick a backbone."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtune_jax.models.bert import BERT_TINY, bert
from gradtune_jax.models.classifier import Classifier
from gradtune_jax.models.resnet import resnet
from gradtune_jax.models.small_cnn import SmallCNN

_BACKBONES: dict[str, Callable[..., Any]] = {
    "small_cnn": lambda dtype, **kw: SmallCNN(dtype=dtype, **kw),
    "tiny_cnn": lambda dtype, **kw: SmallCNN(widths=(8, 16), dtype=dtype, **kw),
    # ImageNet-style ResNets (224 px inputs); kwargs: width (64 standard).
    "resnet18": lambda dtype, **kw: resnet(18, dtype, **kw),
    "resnet50": lambda dtype, **kw: resnet(50, dtype, **kw),
    # 3x3 stride-1 stem, no max-pool: for 16-64 px images.
    "resnet18_small": lambda dtype, **kw: resnet(18, dtype, small_input=True, **kw),
    "resnet50_small": lambda dtype, **kw: resnet(50, dtype, small_input=True, **kw),
    # BERT-base by default; kwargs: config (a BertConfig / dict) and field overrides.
    "bert": lambda dtype, **kw: bert(dtype, **kw),
    "bert_tiny": lambda dtype, **kw: bert(dtype, **{"config": BERT_TINY, **kw}),
}


def register_backbone(name: str, factory: Callable[..., Any]) -> None:
    """Register `factory(dtype, **kwargs) -> nn.Module` under `name`."""
    _BACKBONES[name] = factory


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def create_model(name: str, num_classes: int, dtype: Any = jnp.float32, **kwargs) -> Classifier:
    """A `Classifier` with the named backbone; raises ValueError naming the choices."""
    if name not in _BACKBONES:
        raise ValueError(f"unknown model {name!r}; expected one of {backbone_names()}")
    return Classifier(backbone=_BACKBONES[name](dtype, **kwargs), num_classes=num_classes, dtype=dtype)


def init_variables(model: Classifier, x_example, seed: int) -> dict:
    """Initialise `{"params", "batch_stats"?}` on one example batch."""
    return dict(model.init(jax.random.key(seed), x_example, train=False))
