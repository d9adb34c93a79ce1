"""ERM with the run's `Recipe` and its eval-mode features, cached under a key of everything that
made them.

`train_model` / `init_state` are the one way a method trains a model on a `GroupDataset`: they
build the state from the recipe (backbone, weights, precision, optimizer over the actual train
set's length) and train it with `loop.fit` (sampler, batches, train transform).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split, dataset_fingerprint
from gradtune_jax.methods.features import FeatureSet, load_feature_set, make_feature_set
from gradtune_jax.models import HEAD
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.recipe import InitFn, Recipe, create_train_state, digest
from gradtune_jax.train.state import TrainState
from gradtune_jax.train.steps import LossFn, weighted_ce


def init_state(ds: GroupDataset, recipe: Recipe, seed: int, *, n_train: int | None = None, extra: Any = None,
               init_fn: InitFn | None = None) -> TrainState:
    """A fresh state of `recipe` for `ds` (schedule over `n_train` examples, default all of train)."""
    return create_train_state(recipe, ds.n_classes, ds.train.x, seed,
                              n_train=len(ds.train) if n_train is None else n_train, extra=extra, init_fn=init_fn)


def train_model(ds: GroupDataset, recipe: Recipe, seed: int, *, train: Split | None = None,
                workdir: str | None = None, loss_fn: LossFn = weighted_ce, weights: np.ndarray | None = None,
                extra: Any = None, init_fn: InitFn | None = None, desc: str = "ERM",
                progress: bool = True) -> TrainState:
    """Train `recipe` from its initialisation on `train` (default: the whole train split)."""
    train = ds.train if train is None else train
    state = init_state(ds, recipe, seed, n_train=len(train), extra=extra, init_fn=init_fn)
    state, _ = fit(state, train, recipe, seed=seed, loss_fn=loss_fn, weights=weights, workdir=workdir,
                   desc=desc, progress=progress)
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


@functools.cache
def code_versions() -> dict:
    """Versions whose numerics a run depends on (part of every cache key): jax, flax, optax, and
    this package's version and source (a digest of its .py files, so an edited method never
    reuses a result of the old code)."""
    import flax
    import jax
    import optax

    import gradtune_jax

    root = os.path.dirname(gradtune_jax.__file__)
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if f.endswith(".py"))
    src = hashlib.sha256()
    for f in files:
        src.update(os.path.relpath(f, root).encode())
        with open(f, "rb") as fh:
            src.update(fh.read())
    return {"gradtune-jax": gradtune_jax.__version__, "source": src.hexdigest()[:16], "jax": jax.__version__,
            "flax": flax.__version__, "optax": optax.__version__}


def erm_key(ds: GroupDataset, recipe: Recipe) -> dict:
    """What an ERM run (and everything cached from it) depends on, seed aside."""
    return {"dataset": ds.name, "data": dataset_fingerprint(ds), "recipe": recipe.fingerprint(),
            "versions": code_versions()}


def erm_dir(root: str, ds: GroupDataset, recipe: Recipe, seed: int) -> str:
    """`root/erm-<key>/seed{seed}`: this (dataset, recipe, versions) run's folder. A changed setting
    gets a new folder; stale folders are left alone."""
    return os.path.join(root, f"erm-{digest(erm_key(ds, recipe))}", f"seed{seed}")


@dataclasses.dataclass(frozen=True)
class ERMRun:
    """The ERM feature set of one seed and how it was obtained (`reused`: from the cache)."""

    fs: FeatureSet
    state: TrainState | None  # None when the features came from the cache
    seconds: float  # compute time of the ERM training and feature extraction, summed over resumes
    reused: bool
    folder: str | None


def erm_feature_set(ds: GroupDataset, recipe: Recipe, seed: int, root: str | None, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> ERMRun:
    """Train (or resume) this seed's ERM model under `erm_dir(root, ...)` and return its cached
    `FeatureSet`, reused only when dataset, recipe, versions and seed all match (they name the
    folder, and `meta.json` inside records them in full)."""
    if ds.input_kind == "features":
        t0 = time.perf_counter()
        fs = features_erm(ds, recipe, seed, log)
        return ERMRun(fs, None, time.perf_counter() - t0, False, None)
    folder = erm_dir(root, ds, recipe, seed) if root is not None else None
    if folder is not None:
        path, meta_path = os.path.join(folder, "features.npz"), os.path.join(folder, "meta.json")
        if os.path.exists(path) and os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            log(f"seed {seed}: reusing cached ERM features {path} (computed in {meta['seconds']:.1f} s)")
            return ERMRun(load_feature_set(path, ds), None, float(meta["seconds"]), True, folder)
    state = init_state(ds, recipe, seed)
    workdir = os.path.join(folder, "checkpoints") if folder else None
    state, history = fit(state, ds.train, recipe, seed=seed, workdir=workdir, desc=f"ERM seed {seed}",
                         progress=progress)
    t0 = time.perf_counter()
    fs = extract_features(state, ds, seed, recipe.eval_batch_size, progress=progress)
    # per-epoch times come from the checkpoint history: epochs of an earlier (killed) run count too
    seconds = time.perf_counter() - t0 + sum(h["seconds"] for h in history)
    if folder is not None:
        fs.save(path)
        from gradtune_jax.io import atomic_write_json

        atomic_write_json(meta_path, {**erm_key(ds, recipe), "seed": seed, "recipe_record": recipe.describe(),
                                      "dataset_info": {k: repr(v) for k, v in ds.info.items()},
                                      "seconds": seconds, "history": history})
    return ERMRun(fs, state, seconds, False, folder)


def features_erm(ds: GroupDataset, recipe: Recipe, seed: int, log: Callable[[str], None] = print) -> FeatureSet:
    """`FeatureSet` of a precomputed-features dataset: its own ERM head when the file has one, else a
    head trained class-balanced on the train features (the recipe's optimizer, epochs and batch
    size; head reset)."""
    from gradtune_jax.train.last_layer import HeadConfig, init_head, train_head

    head = ds.info.get("head")
    if head is None:
        log(f"seed {seed}: no ERM head in the features file; training one on the train features")
        hc = HeadConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, optim=recipe.optim,
                        sampler="class_balanced", reset=True)
        head = train_head(init_head(ds.train.x.shape[1], ds.n_classes, seed), ds.train.x, ds.train.y, hc, seed)
    return make_feature_set(ds, head, seed)
