"""Data parallelism over all devices of the job: one option, three modes, one pure step underneath.

- `"jit"` (default, the maintained path): `jax.jit(steps.train_step)` over a 1-D mesh `("data",)`
  with Auto axis types; batches are sharded `P("data")`, the state is replicated `P()`. The step
  is ordinary single-device code on the global batch, so it equals the single-device step exactly
  (BatchNorm statistics are global, dropout masks are the same with JAX's partitionable threefry).
- `"pmap"`: `jax.pmap(steps.train_step(..., axis_name="data"))`, the state broadcast and returned
  replicated (`in_axes=None`, `out_axes=None`). Each device runs the step on its shard; the loss
  and metrics are computed on the all-gathered logits/labels (so any `loss_fn`, GroupDRO included,
  sees the global batch and its global weight sum), gradients and BatchNorm running statistics are
  `pmean`-ed. BatchNorm layers (any Linen model's `nn.BatchNorm` without an `axis_name`) are
  made to reduce their batch statistics over the device axis (sync BatchNorm, via a method
  interceptor), so the forward pass normalises with the global batch's statistics exactly as
  the single-device step does; the alternative of per-device statistics with averaged running
  averages (the flax imagenet example) is not equivalent and not offered.
  Dropout keys differ per device, so masks differ from the single-device step's.
- `"none"`: plain `jax.jit` on the default device (the historical behaviour).

Multi-process (`gradtune_jax.distributed`): the `"jit"` mesh spans the devices of every process
and runs unchanged. Each process loads only its rows of every global batch (`rows`), and `put`
assembles the global array with `jax.make_array_from_process_local_data`. `"pmap"` is the legacy
single-process mode (deprecated upstream in favour of jit/shard_map) and refuses to run with
several processes; `"none"` trains a full copy on every process (no communication).

A global batch that does not divide by the device count is padded to the next multiple with
weight-0 copies of its first row (the loop already pads the ragged last batch the same way), so
every step has one shape and compiles once. Weight-0 rows change no loss, gradient or metric, but
they do enter BatchNorm's train-mode batch statistics, as the loop's padding does on one device.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gradtune_jax.distributed import global_batch, local_positions
from gradtune_jax.errors import UserError
from gradtune_jax.train.state import TrainState
from gradtune_jax.train.steps import LossFn, train_step, weighted_ce

MODES = ("jit", "pmap", "none")
DATA_AXIS = "data"


def check_mode(mode: str) -> str:
    """`mode` if it is one of `MODES`, else ValueError."""
    if mode not in MODES:
        raise ValueError(f"parallel must be one of {MODES}, got {mode!r}")
    return mode


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh `("data",)` with an Auto axis over `devices` (default: all devices of all processes,
    which are the local devices in a single-process job)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def pad_batch(batch: Any, multiple: int) -> Any:
    """Pad every leaf's leading axis to a multiple of `multiple` with copies of row 0; `w` (the
    per-example weight, when `batch` is a dict holding it) is 0 on the added rows."""
    n = len(jax.tree.leaves(batch)[0])
    extra = -n % multiple
    if extra == 0:
        return batch
    rows = np.concatenate([np.arange(n), np.zeros(extra, np.int64)])
    out = jax.tree.map(lambda v: v[rows], batch)
    if isinstance(batch, dict) and "w" in batch:
        out["w"] = np.concatenate([np.asarray(batch["w"], np.float32), np.zeros(extra, np.float32)])
    return out


def _global_batchnorm(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Method interceptor: every `nn.BatchNorm` without an `axis_name` reduces over `DATA_AXIS`
    (same variables: the clone is bound to the module's own scope)."""
    m = context.module
    if isinstance(m, nn.BatchNorm) and m.axis_name is None and context.method_name == "__call__":
        return m.clone(parent=m.scope, axis_name=DATA_AXIS)(*args, **kwargs)
    return next_fun(*args, **kwargs)


def global_batchnorm(apply_fn: Callable) -> Callable:
    """`apply_fn` with BatchNorm batch statistics taken over the whole `DATA_AXIS` (inside `pmap`)."""

    @functools.wraps(apply_fn)
    def apply(*args, **kwargs):
        with nn.intercept_methods(_global_batchnorm):
            return apply_fn(*args, **kwargs)

    return apply


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A placed train step: `state = place(state)` once, then `state, m = step(state, put(batch))`.

    `put` takes a host batch of any size; `step` returns the state in the layout `place` gives
    (replicated over `mesh` for "jit"/"pmap"), usable by ordinary jitted code such as `predict`.
    `rows(batch_size)` is None in a single-process job; with several processes it gives the
    positions of a global batch (padded to a multiple of the device count; positions past
    `batch_size` are weight-0 copies of row 0) that this process loads, and `put` takes exactly
    those rows.
    """

    mode: str
    mesh: Mesh | None
    step: Callable[[TrainState, Any], tuple[TrainState, dict]]
    put: Callable[[dict], Any]
    place: Callable[[Any], Any]
    rows: Callable[[int], np.ndarray | None] = lambda batch_size: None


def _pmap_body(loss_fn: LossFn, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    inner = state.replace(apply_fn=global_batchnorm(state.apply_fn))
    inner, metrics = train_step(inner, batch, loss_fn, axis_name=DATA_AXIS)
    return inner.replace(apply_fn=state.apply_fn), metrics


def data_parallel(mode: str = "jit", loss_fn: LossFn = weighted_ce, devices: list | None = None) -> DataParallel:
    """The train step, batch placement and state placement of `mode` ("jit" | "pmap" | "none").

    Cached per (mode, loss, devices): every `fit` with the same loss reuses one jitted step, so a
    method that trains many models (JTT, LDS, removal curves) compiles once per input shape.
    """
    return _data_parallel(check_mode(mode), loss_fn, None if devices is None else tuple(devices))


@functools.lru_cache(maxsize=32)
def _data_parallel(mode: str, loss_fn: LossFn, devices: tuple | None) -> DataParallel:
    if mode == "none":
        step = jax.jit(functools.partial(train_step, loss_fn=loss_fn), donate_argnums=0)
        return DataParallel(mode, None, step, jax.device_put, lambda state: state)
    if mode == "pmap" and jax.process_count() > 1:
        raise UserError(f"parallel='pmap' is the legacy single-process mode; this job has {jax.process_count()} "
                        f"processes: use parallel='jit' (--parallel jit)")
    mesh = data_mesh(devices)
    n = mesh.size
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))

    def place(state: TrainState) -> TrainState:
        return jax.device_put(state, replicated)

    if mode == "jit":
        step = jax.jit(functools.partial(train_step, loss_fn=loss_fn), in_shardings=(replicated, sharded),
                       out_shardings=(replicated, replicated), donate_argnums=0)

        def put(batch: dict) -> dict:
            return jax.device_put(pad_batch(batch, n), sharded)

        if jax.process_count() > 1:  # several processes: each passes its rows only
            def rows(batch_size: int) -> np.ndarray:
                return local_positions(-(-batch_size // n) * n, mesh, DATA_AXIS)

            def put(batch: dict) -> dict:
                local = len(jax.tree.leaves(batch)[0])
                return global_batch(batch, mesh, local * n // len(mesh.local_devices), DATA_AXIS)

            return DataParallel(mode, mesh, step, put, place, rows)
    else:
        step = jax.pmap(functools.partial(_pmap_body, loss_fn), axis_name=DATA_AXIS, in_axes=(None, 0),
                        out_axes=None, devices=list(mesh.devices.flat))

        def put(batch: dict) -> dict:
            per_device = jax.tree.map(lambda v: v.reshape(n, -1, *v.shape[1:]), pad_batch(batch, n))
            return jax.device_put(per_device, sharded)
    return DataParallel(mode, mesh, step, put, place)
