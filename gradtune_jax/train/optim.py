"""Optimizers and schedules (optax), named as in the papers' hyperparameter tables."""
from __future__ import annotations

import dataclasses
import functools

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """`name` in {"sgd", "adamw", "adam"}; `schedule` in {"constant", "cosine", "linear"}.

    Weight decay follows the reference code: SGD adds `wd * param` to the gradient (torch's
    coupled L2); AdamW decays decoupled; `decay_kernels_only` masks biases and norms (the text
    recipe, "wd on the kernel only").
    """

    name: str = "sgd"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.0
    schedule: str = "constant"
    decay_kernels_only: bool = False


def _kernel_mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: "kernel" in jax.tree_util.keystr(path), params)


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
    if cfg.schedule == "linear":
        return optax.linear_schedule(cfg.lr, 0.0, max(total_steps, 1))
    raise ValueError(f"schedule must be constant, cosine or linear, got {cfg.schedule!r}")


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation for `cfg` over `total_steps` steps."""
    lr = make_schedule(cfg, total_steps)
    mask = _kernel_mask if cfg.decay_kernels_only else None
    if cfg.name == "sgd":
        decay = optax.add_decayed_weights(cfg.weight_decay, mask=mask)
        return optax.chain(decay, optax.sgd(lr, momentum=cfg.momentum or None))
    if cfg.name == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay, mask=mask)
    if cfg.name == "adam":  # torch Adam's weight_decay is coupled L2
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=mask), optax.adam(lr))
    raise ValueError(f"optimizer must be sgd, adamw or adam, got {cfg.name!r}")


@functools.lru_cache(maxsize=64)
def cached_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """`make_optimizer`, one object per recipe: train states built from it share jitted steps
    (the optimizer is a static part of the state, so a new object would force a retrace)."""
    return make_optimizer(cfg, total_steps)
