"""ERM (class-balanced sampler, shared protocol) and feature extraction with its last checkpoint."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split, take
from gradtune_jax.data.transforms import ImagePipeline
from gradtune_jax.methods.features import FeatureSet, make_feature_set
from gradtune_jax.models import HEAD, create_model, init_variables
from gradtune_jax.train.loop import FitConfig, fit, predict, steps_per_epoch
from gradtune_jax.train.optim import cached_optimizer
from gradtune_jax.train.state import TrainState, create_state
from gradtune_jax.train.steps import LossFn, weighted_ce


@dataclasses.dataclass(frozen=True)
class ERMConfig:
    """Backbone name and fit recipe of the ERM model."""

    model: str = "small_cnn"
    fit: FitConfig = FitConfig()
    eval_batch_size: int = 512
    # ImageNet-style inputs: `pipeline.train` augments each train batch, and the model's eval-mode
    # apply resizes, centre-crops and normalises (so every `predict` sees preprocessed images).
    pipeline: ImagePipeline | None = None


@functools.lru_cache(maxsize=64)
def _apply_fn(model, pipeline: ImagePipeline | None) -> Callable:
    """One apply function per (model config, pipeline): states of equal models share it, so a
    jitted step traced for one ERM run is reused by the next (JTT, removal curves, LDS)."""
    if pipeline is None:
        return model.apply

    def apply(variables, x, train: bool = False, **kwargs):
        # eval-mode inputs go through `pipeline.eval`; train inputs come augmented by the loop
        return model.apply(variables, x if train else pipeline.eval(x), train=train, **kwargs)

    return apply



def init_state(ds: GroupDataset, cfg: ERMConfig, seed: int, init_variables_fn: Callable | None = None,
               extra: Any = None, n_train: int | None = None) -> TrainState:
    """A fresh train state for `cfg.model` on `ds` (or from `init_variables_fn(model, seed)`); bf16
    compute with `cfg.fit.mixed_precision` (params stay float32). The learning-rate schedule spans
    `cfg.fit.epochs` epochs of `n_train` examples (default: the whole train split)."""
    model = create_model(cfg.model, ds.n_classes, dtype=cfg.fit.compute_dtype)
    x0 = take(ds.train.x, np.arange(min(2, len(ds.train))))
    variables = init_variables_fn(model, seed) if init_variables_fn else init_variables(model, x0, seed)
    total = cfg.fit.epochs * steps_per_epoch(len(ds.train) if n_train is None else n_train, cfg.fit.batch_size)
    state = create_state(model, variables, cached_optimizer(cfg.fit.optim, total), seed=seed, extra=extra)
    return state.replace(apply_fn=_apply_fn(model, cfg.pipeline))


def train_model(ds: GroupDataset, cfg: ERMConfig, seed: int, *, train: Split | None = None,
                workdir: str | None = None, loss_fn: LossFn = weighted_ce,
                weights: np.ndarray | None = None, desc: str = "ERM", progress: bool = True,
                extra: Any = None, init_variables_fn: Callable | None = None) -> TrainState:
    """Train `cfg.model` from its initialisation on `train` (default: the whole train split)."""
    train = ds.train if train is None else train
    state = init_state(ds, cfg, seed, init_variables_fn, extra, n_train=len(train))
    augment = cfg.pipeline.train if cfg.pipeline is not None else None
    state, _ = fit(state, train, cfg.fit, augment=augment, seed=seed, loss_fn=loss_fn,
                   weights=weights, workdir=workdir, desc=desc, progress=progress)
    return state


def extract_features(state: TrainState, ds: GroupDataset, seed: int, batch_size: int = 512,
                     progress: bool = True) -> FeatureSet:
    """Eval-mode features of every split and the trained head, as a `FeatureSet` for `seed`."""
    splits = {}
    for s in ("train", "val", "test"):
        sp = ds.split(s)
        _, feats = predict(state, sp.x, batch_size, progress=progress, desc=f"features {s}")
        splits[s] = dataclasses.replace(sp, x=feats)
    ds_feats = dataclasses.replace(ds, **splits, input_kind="features")
    head = {k: np.asarray(v) for k, v in state.params[HEAD].items()}
    return make_feature_set(ds_feats, head, seed)


def erm_checkpoint_dir(root: str, seed: int) -> str:
    return os.path.join(root, f"seed{seed}", "erm")


def erm_feature_set(ds: GroupDataset, cfg: ERMConfig, seed: int, root: str | None, *,
                    progress: bool = True, init_variables_fn: Callable | None = None,
                    log: Callable[[str], None] = print) -> tuple[FeatureSet, TrainState | None]:
    """Train (or resume) this seed's ERM model under `root/seed{seed}/erm` and return its cached
    `FeatureSet` (`root/seed{seed}/features.npz`), reused when recipe and data match.

    Returns the state too when it was (re)loaded, else None (features came from the cache).
    """
    import json

    if ds.input_kind == "features":
        return features_erm(ds, cfg, seed, log), None
    from gradtune_jax.io import atomic_write_json
    from gradtune_jax.methods.features import cache_path, load_feature_set

    key = {"erm": repr(cfg), "dataset": ds.name, "data_info": repr(sorted(ds.info.items())), "seed": seed}
    if root is not None:
        path = cache_path(root, seed)
        meta = path + ".json"
        if os.path.exists(path) and os.path.exists(meta):
            with open(meta) as f:
                if json.load(f) == key:
                    log(f"seed {seed}: reusing cached ERM features {path}")
                    return load_feature_set(path, ds), None
    workdir = erm_checkpoint_dir(root, seed) if root is not None else None
    state = train_model(ds, cfg, seed, workdir=workdir, progress=progress, desc=f"ERM seed {seed}",
                        init_variables_fn=init_variables_fn)
    fs = extract_features(state, ds, seed, cfg.eval_batch_size, progress=progress)
    if root is not None:
        fs.save(path)
        atomic_write_json(meta, key)
    return fs, state


def features_erm(ds: GroupDataset, cfg: ERMConfig, seed: int, log: Callable[[str], None] = print) -> FeatureSet:
    """`FeatureSet` of a precomputed-features dataset: its own ERM head when the file has one, else a
    head trained class-balanced on the train features (recipe `cfg.fit`, head reset)."""
    from gradtune_jax.train.last_layer import HeadConfig, init_head, train_head

    head = ds.info.get("head")
    if head is None:
        log(f"seed {seed}: no ERM head in the features file; training one on the train features")
        hc = HeadConfig(epochs=cfg.fit.epochs, batch_size=cfg.fit.batch_size, optim=cfg.fit.optim,
                        sampler="class_balanced", reset=True)
        head = train_head(init_head(ds.train.x.shape[1], ds.n_classes, seed), ds.train.x, ds.train.y, hc, seed)
    return make_feature_set(ds, head, seed)
