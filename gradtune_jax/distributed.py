"""Multi-process (multi-host) JAX: start-up, who is primary, process-local rows of a global batch,
gathering results.

One Python process per host (TPU VM worker, SLURM task, or a local process started by
`python -m gradtune_jax.launch`); `initialize` connects them through `jax.distributed` before any
JAX computation, after which `jax.devices()` lists the devices of *all* processes and a mesh over
them (`train/parallel.data_mesh()`) spans the whole job. Every process then runs the same program
on the same global shapes; each loads only the rows of a global batch that its own devices hold
(`local_positions`) and `global_batch` assembles the global array from them
(`jax.make_array_from_process_local_data`). Results that come back sharded are gathered once
(`gather_rows`, `to_host`).

On one process every helper degrades to the single-process behaviour (`initialize` is a no-op).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gradtune_jax.errors import UserError

# Environment variables read by `initialize` when no arguments are given (the launcher sets them).
# JAX itself reads JAX_COORDINATOR_ADDRESS; the two others are this package's (same naming).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

log = logging.getLogger(__name__)


def _started() -> bool:
    from jax._src import distributed as _dist  # the only way to ask without starting the backend

    return getattr(_dist.global_state, "client", None) is not None


def _cluster_detected() -> str | None:
    """Name of the cluster environment JAX would auto-detect (SLURM, Open MPI, TPU pod), or None.

    Uses JAX's own detectors; a single-task SLURM/MPI job counts as no cluster."""
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:  # pragma: no cover - JAX internals moved
        return None
    for env in getattr(ClusterEnv, "_cluster_types", ()):
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if env.is_env_present() and env.get_process_count() > 1:
                return env.__name__
        except Exception:  # noqa: BLE001 - a detector that cannot answer means "not this cluster"
            continue
    return None


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {text!r}") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Start `jax.distributed` when the job has several processes; return whether it did.

    Sources, first match wins: the arguments (`coordinator` "HOST:PORT", `num_processes`,
    `process_id`, all three or none), the environment (`JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), JAX's cluster auto-detection (SLURM, Open MPI, Cloud
    TPU pod slices). One process, or nothing set: a no-op. Must run before any JAX computation
    (UserError otherwise); calling it again after a successful start is a no-op.
    """
    if _started():
        return True
    given = (coordinator, num_processes, process_id)
    if any(v is not None for v in given) and None in given:
        raise UserError("--coordinator, --num-processes and --process-id go together: give all three or none")
    if coordinator is None:
        coordinator = os.environ.get(ENV_COORDINATOR) or None
        num_processes, process_id = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
        if coordinator is not None and (num_processes is None or process_id is None):
            raise UserError(f"{ENV_COORDINATOR} is set: {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be set too")
    kwargs: dict[str, Any] = {}
    if coordinator is not None:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UserError(f"process id must be in [0, {num_processes}) with at least one process, "
                            f"got process id {process_id} of {num_processes}")
        if num_processes == 1:
            return False
        if ":" not in coordinator:
            raise UserError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    else:
        cluster = _cluster_detected()
        if cluster is None:
            return False
        log.info("multi-process job detected (%s)", cluster)
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise UserError("jax.distributed must start before any JAX computation: call "
                        "gradtune_jax.distributed.initialize() (or parse the CLI arguments) first")
    jax.distributed.initialize(**kwargs)
    return True


def add_arguments(parser) -> None:
    """Add `--coordinator`, `--num-processes`, `--process-id` to an argparse parser."""
    g = parser.add_argument_group("multi-process (default: auto-detected from SLURM / Open MPI / TPU pod or "
                                  f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}; else one process)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes in the job")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")


def initialize_from_args(args) -> bool:
    """`initialize` from parsed `add_arguments` options; on a non-primary process stdout is silenced
    (its errors still go to stderr)."""
    started = initialize(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                         getattr(args, "process_id", None))
    if started and not is_primary():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return started


def process_count() -> int:
    """Number of processes in the job (1 without `jax.distributed`)."""
    return jax.process_count()


def process_index() -> int:
    """This process's index (0 without `jax.distributed`)."""
    return jax.process_index()


def is_primary() -> bool:
    """True on process 0 (the one that writes tables, plots and results)."""
    return jax.process_index() == 0


def is_multiprocess() -> bool:
    """True when the job has several processes."""
    return jax.process_count() > 1


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Rows split along `axis` of `mesh`."""
    return NamedSharding(mesh, P(axis))


def positions_by_process(n_rows: int, mesh: Mesh, axis: str = "data") -> dict[int, np.ndarray]:
    """`{process: rows}`: the rows of a global `(n_rows, ...)` array sharded along `axis` that each
    process's devices hold, ascending (the order `make_array_from_process_local_data` expects).
    `n_rows` must divide by the axis size."""
    sharding = batch_sharding(mesh, axis)
    out: dict[int, list] = {}
    for device, index in sharding.devices_indices_map((n_rows,)).items():
        out.setdefault(device.process_index, []).append(range(n_rows)[index[0]])
    return {p: np.unique(np.concatenate([np.asarray(r, np.int64) for r in rs])) for p, rs in sorted(out.items())}


def local_positions(n_rows: int, mesh: Mesh, axis: str = "data") -> np.ndarray:
    """The rows of a global batch of `n_rows` (a multiple of the axis size) this process loads."""
    return positions_by_process(n_rows, mesh, axis)[jax.process_index()]


def global_batch(local_tree: Any, mesh: Mesh, n_rows: int, axis: str = "data") -> Any:
    """The global `(n_rows, ...)` arrays sharded along `axis`, from this process's rows
    (`local_positions(n_rows, mesh)`) of every leaf."""
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(
        sharding, np.asarray(v), (n_rows, *np.shape(v)[1:])), local_tree)


def local_rows(arr: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded along its first axis, ascending by row (the
    inverse of `global_batch`; replicated copies counted once)."""
    shards = {}
    for sh in arr.addressable_shards:
        start = (sh.index[0].start or 0) if sh.index else 0
        shards.setdefault(start, sh.data)
    return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)]) if shards else np.zeros((0,))


def gather_rows(local_BLX: Sequence[np.ndarray] | np.ndarray, n_rows: int, mesh: Mesh, n_valid: Sequence[int],
                axis: str = "data") -> np.ndarray:
    """Assemble batches computed on a global mesh, in one collective.

    `local_BLX[b]` holds this process's rows (`local_positions(n_rows, mesh)`) of global batch `b`
    (each batch `n_rows` long, of which the first `n_valid[b]` are real); returns the real rows of
    every batch, concatenated in global order, on every process. Needs at least one batch.
    """
    local = np.stack(local_BLX) if not isinstance(local_BLX, np.ndarray) else local_BLX
    positions = positions_by_process(n_rows, mesh, axis)
    if len(positions) == 1:
        allp = local[None]
    else:
        from jax.experimental import multihost_utils

        allp = np.asarray(multihost_utils.process_allgather(local, tiled=False))  # (P, B, L, ...)
    full = np.empty((local.shape[0], n_rows, *local.shape[2:]), local.dtype)
    for p, rows in positions.items():
        full[:, rows] = allp[p]
    keep = np.concatenate([b * n_rows + np.arange(n, dtype=np.int64) for b, n in enumerate(n_valid)])
    return full.reshape(-1, *local.shape[2:])[keep]


def gather_slices(local_NX: np.ndarray, n_total: int) -> np.ndarray:
    """Concatenate every process's block of rows (process p holds `split_range(n_total)[p]`) on
    every process, in one collective."""
    if jax.process_count() == 1:
        return np.asarray(local_NX)
    from jax.experimental import multihost_utils

    bounds = [split_range(n_total, p) for p in range(jax.process_count())]
    width = max(b - a for a, b in bounds)
    pad = np.zeros((width - len(local_NX), *np.shape(local_NX)[1:]), np.asarray(local_NX).dtype)
    allp = np.asarray(multihost_utils.process_allgather(np.concatenate([np.asarray(local_NX), pad]), tiled=False))
    return np.concatenate([allp[p, :b - a] for p, (a, b) in enumerate(bounds)])


def split_range(n: int, process: int | None = None, count: int | None = None) -> tuple[int, int]:
    """`[start, stop)` of process `process`'s contiguous block of `n` items (blocks differ by at most one)."""
    process = jax.process_index() if process is None else process
    count = jax.process_count() if count is None else count
    return process * n // count, (process + 1) * n // count


def to_host(tree: Any) -> Any:
    """Every leaf as a numpy array on every process: local and replicated arrays directly, arrays
    sharded over several processes through one allgather."""
    def one(v):
        if isinstance(v, jax.Array) and not v.is_fully_addressable and not v.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(v, tiled=True))
        return np.asarray(v)

    return jax.tree.map(one, tree)


def sync(name: str) -> None:
    """Barrier across processes (no-op on one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_mesh(n_devices: int | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh (Auto axis) over this process's first `n_devices` devices (default all): work that
    needs no communication with the other processes."""
    from jax.sharding import AxisType

    return Mesh(np.asarray(jax.local_devices()[:n_devices]), (axis,), axis_types=(AxisType.Auto,))
