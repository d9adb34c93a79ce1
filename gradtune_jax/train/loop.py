"""The epoch loop: sampler -> fixed-shape batches -> one jitted, donated step; progress bar;
checkpoints every N epochs and resume from the latest one."""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from gradtune_jax.progress import progress as progress_bar

from gradtune_jax.data.dataset import Split, take
from gradtune_jax.data.samplers import epoch_indices
from gradtune_jax.distributed import gather_rows, global_batch, local_positions, local_rows
from gradtune_jax.train.checkpoint import Checkpointer
from gradtune_jax.train.parallel import DATA_AXIS, data_mesh, data_parallel
from gradtune_jax.train.recipe import SAMPLERS, Recipe, steps_per_epoch
from gradtune_jax.train.state import TrainState
from gradtune_jax.train.steps import LossFn, eval_step, weighted_ce

__all__ = ["SAMPLERS", "Recipe", "batches", "fit", "predict", "steps_per_epoch"]


def batches(split: Split, idx: np.ndarray, batch_size: int, augment: Callable | None = None,
            rng: np.random.Generator | None = None, rows: np.ndarray | None = None):
    """Yield fixed-shape batch dicts over `idx`; the last one is padded with weight-0 rows.

    `rows` (multi-process, `DataParallel.rows`): only these positions of every global batch are
    loaded; positions past `batch_size` are weight-0 copies of row 0. A random `augment` draws
    for the whole batch, so with one the whole batch is read and augmented, then cut to `rows`.
    """
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        w = np.ones(batch_size, np.float32)
        if len(part) < batch_size:
            w[len(part):] = 0.0
            part = np.concatenate([part, np.full(batch_size - len(part), part[0])])
        if rows is not None:
            pos = np.where(rows < batch_size, rows, 0)
            w = np.where(rows < batch_size, w[pos], 0.0).astype(np.float32)
            x = augment(take(split.x, part), rng)[pos] if augment is not None else take(split.x, part[pos])
            part = part[pos]
            yield {"x": x, "y": split.y[part].astype(np.int32), "g": split.g[part].astype(np.int32), "w": w}
            continue
        x = take(split.x, part)
        if augment is not None:
            x = augment(x, rng)
        yield {"x": x, "y": split.y[part].astype(np.int32), "g": split.g[part].astype(np.int32), "w": w}


def _sampler_labels(split: Split, sampler: str):
    if sampler == "class_balanced":
        return split.y
    if sampler == "group_balanced":
        return split.g
    if sampler in ("uniform", "weighted"):
        return None
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def fit(state: TrainState, split: Split, recipe: Recipe, *, seed: int, loss_fn: LossFn = weighted_ce,
        weights: np.ndarray | None = None, workdir: str | None = None, stop_at: int | None = None,
        desc: str = "train", progress: bool = True, put: Callable[[dict], Any] | None = None,
        step_fn: Callable | None = None) -> tuple[TrainState, list[dict]]:
    """Train `state` (built by `recipe.create_train_state`) on `split` as `recipe` says: its
    sampler, batch size, parallel mode, checkpoint cadence, and its train transform
    (`recipe.pipeline.train`) on every batch. Runs epochs up to `stop_at` (default
    `recipe.epochs`; the schedule inside the state always spans the recipe's length) and resumes
    from `workdir` if it holds a checkpoint.

    Every random choice of epoch `e` comes from `default_rng([seed, e])`, so a resumed run gives the
    same parameters as an uninterrupted one. `weights` (per example) drive the "weighted" sampler.
    The step runs data-parallel as `recipe.parallel` says (`train/parallel.py`; the returned state
    is replicated over the devices). `put` places a batch on devices (sharding hook); `step_fn`
    overrides the step (then `put` defaults to `jax.device_put` and the state is not moved).
    """
    if recipe.sampler == "weighted" and weights is None:
        raise ValueError("sampler 'weighted' needs per-example weights")
    labels = _sampler_labels(split, recipe.sampler)
    stop = recipe.epochs if stop_at is None else stop_at
    augment = recipe.pipeline.train if recipe.pipeline is not None else None
    if step_fn is None:
        par = data_parallel(recipe.parallel, loss_fn)
        rows = par.rows(recipe.batch_size) if put is None else None  # this process's rows (multi-process)
        step, put, place = par.step, put or par.put, par.place
    else:
        step, put, place, rows = step_fn, put or jax.device_put, lambda s: s, None
    ckpt = Checkpointer(workdir, every=recipe.checkpoint_every) if workdir else None
    history: list[dict] = []
    start = 0
    state = place(state)  # before restoring: the checkpoint is read straight into this layout
    if ckpt is not None:
        restored = ckpt.restore(state)
        if restored is not None:
            state, meta = restored
            start, history = int(meta["epoch"]), list(meta["history"])
    n_steps = steps_per_epoch(len(split), recipe.batch_size)
    bar = progress_bar(total=stop * n_steps, initial=start * n_steps, desc=desc, unit="step", enabled=progress,
                       steps_per_epoch=n_steps)  # a bar on a TTY, else one log line per epoch with rate and ETA
    try:
        for epoch in range(start, stop):
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, epoch])
            idx = epoch_indices(labels, len(split), len(split), rng,
                                weights=weights if recipe.sampler == "weighted" else None)
            for batch in batches(split, idx, recipe.batch_size, augment, rng, rows):
                state, m = step(state, put(batch))
                bar.update()
            metrics = {"epoch": epoch + 1, "loss": float(m["loss"]), "acc": float(m["acc"]),
                       "seconds": time.perf_counter() - t0}
            history.append(metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.3f}")
            if ckpt is not None:
                ckpt.maybe_save(epoch + 1, state, {"epoch": epoch + 1, "history": history},
                                final=epoch + 1 == stop)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    return state, history


def predict(state: TrainState, x: Any, batch_size: int = 512, put: Callable | None = None,
            progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode `(logits (N, C), feats (N, D))` over inputs `x`, in fixed-shape batches.

    With several local devices (and no `put`) it runs data-parallel: the state is replicated over
    `data_mesh()`, each batch sharded along `DATA_AXIS`, and `batch_size` rounded up to a multiple
    of the device count. `put` overrides the batch placement (then the state is used as given).
    In a multi-process job the mesh spans every process: each loads only its rows of every batch
    and the outputs are gathered once at the end, so every process returns all `N` rows.
    """
    from gradtune_jax.data.dataset import num_examples

    mesh = rows = None
    if put is None and jax.device_count() > 1:
        mesh = data_mesh()
        state = jax.device_put(state, NamedSharding(mesh, P()))
        put = functools.partial(jax.device_put, device=NamedSharding(mesh, P(DATA_AXIS)))
        batch_size = -(-batch_size // mesh.size) * mesh.size
        if mesh.is_multi_process:
            rows = local_positions(batch_size, mesh, DATA_AXIS)
            put = functools.partial(global_batch, mesh=mesh, n_rows=batch_size, axis=DATA_AXIS)
    put = put or jax.device_put
    n = num_examples(x)
    fn = _eval_fn() if rows is None else _eval_fn_sharded(mesh)
    logits, feats, valid = [], [], []
    for s in progress_bar(range(0, n, batch_size), desc=desc, unit="batch", enabled=progress):
        part = np.arange(s, min(s + batch_size, n))
        pad = np.concatenate([part, np.full(batch_size - len(part), part[0])]) if len(part) < batch_size else part
        if rows is not None:  # this process's rows in, this process's rows out; gathered below
            lo, fe = fn(state, put(take(x, pad[rows])))
            logits.append(local_rows(lo))
            feats.append(local_rows(fe))
            valid.append(len(part))
            continue
        lo, fe = fn(state, put(take(x, pad)))
        logits.append(np.asarray(lo)[:len(part)])
        feats.append(np.asarray(fe)[:len(part)])
    if rows is not None:
        return gather_rows(logits, batch_size, mesh, valid, DATA_AXIS), gather_rows(feats, batch_size, mesh, valid,
                                                                                     DATA_AXIS)
    return np.concatenate(logits), np.concatenate(feats)


@functools.cache
def _eval_fn():
    return jax.jit(eval_step)


@functools.lru_cache(maxsize=4)
def _eval_fn_sharded(mesh):
    """`eval_step` whose outputs stay sharded along `DATA_AXIS` (each process reads its own rows)."""
    return jax.jit(eval_step, out_shardings=NamedSharding(mesh, P(DATA_AXIS)))
