"""TRAK scores over an ensemble of checkpoints: streaming featurisation, blockwise scoring.

Per checkpoint m: train features `X_m` are computed chunk by chunk (and `X_m^T X_m` accumulated),
target features `Phi_m`, `K_m = inv(X_m^T X_m + lambda I) / mean|.|`, then the score matrix is
accumulated block of train rows by block: `S += (X_m K_m) Phi_m^T`. Finally
`tau = S / M * mean_m(Q_m)[:, None]` (traker's `finalize_scores`). With `out=path.npy` the
`(n_train, n_targets)` matrix lives in a memory-mapped `.npy` file, written block by block.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gradtune_jax.progress import progress as progress_bar
from gradtune_jax.kernels.per_example import KeyPath, data_mesh, num_params, replicate, shard_batch
from gradtune_jax.trak.kernels import ApplyFn, featurize, gram64, kernel_inverse_info, score_block
from gradtune_jax.trak.projection import materialize_projection

# `cache_projection=None` materialises P once per checkpoint when it is at most this large.
PROJ_CACHE_BYTES = 1 << 30


def _num(x: Any) -> int:
    return len(jax.tree.leaves(x)[0])


def _take(x: Any, idx: np.ndarray) -> Any:
    return jax.tree.map(lambda v: np.asarray(v[idx]), x)


def _hashable_path(wrt: KeyPath) -> KeyPath:
    # (a string key used to come back as None here: `wrt="params"` silently differentiated every
    # variable, BatchNorm running statistics included)
    return wrt if wrt is None or isinstance(wrt, str) else tuple(wrt)


def chunk_rows(n: int, batch_size: int, mesh: Mesh | None) -> int:
    """Rows per featurisation chunk: `batch_size` (at most n) rounded up to the device count."""
    n_dev = 1 if mesh is None else mesh.size
    return -(-min(batch_size, max(n, 1)) // n_dev) * n_dev


def _take_rows(data: tuple[Any, np.ndarray], a: int, b: int) -> tuple[Any, np.ndarray]:
    return _take(data[0], np.arange(a, b)), np.asarray(data[1])[a:b]


def default_mesh(mesh: Mesh | None) -> Mesh | None:
    """`mesh`, or a data mesh over all devices when there are several."""
    return data_mesh() if mesh is None and jax.device_count() > 1 else mesh


def make_featurizer(apply_fn: ApplyFn, params: Any, key: jax.Array, *, wrt: KeyPath = None,
                    proj_dim: int | None = 2048, proj_type: str = "normal", block_size: int | None = None,
                    mesh: Mesh | None = None, cache_projection: bool | None = None
                    ) -> Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`fn(x_chunk, y_chunk) -> (phi (B, k), q (B,))` for fixed-size chunks of one checkpoint.

    Parameters (and the materialised projection, see `featurize_dataset`) are placed once; with
    a `mesh` each chunk is sharded over its `'data'` axis.
    """
    if proj_type == "factorized":
        from gradtune_jax.trak.factorized import make_factorized_featurizer
        return make_factorized_featurizer(apply_fn, params, key, wrt=wrt, proj_dim=proj_dim, mesh=mesh)
    wrt = _hashable_path(wrt)
    if mesh is not None:
        params = replicate(params, mesh)
    proj_matrix = None
    if proj_dim is not None:
        n_p = num_params(params, wrt)
        if cache_projection or (cache_projection is None and n_p * proj_dim * 4 <= PROJ_CACHE_BYTES):
            proj_matrix = materialize_projection(n_p, key, proj_dim, proj_type, block_size, True)
            if mesh is not None:
                proj_matrix = replicate(proj_matrix, mesh)

    def fn(x: Any, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = (x, np.asarray(y).astype(np.int32))
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        phi_NK, q_N = featurize(apply_fn, params, batch[0], batch[1], key, wrt=wrt, proj_dim=proj_dim,
                                proj_type=proj_type, block_size=block_size, proj_matrix=proj_matrix)
        return np.asarray(phi_NK), np.asarray(q_N)

    return fn


def padded_chunk(data: tuple[Any, np.ndarray], start: int, rows: int) -> tuple[Any, np.ndarray, int]:
    """Rows `[start, start + rows)` of `data = (x, y)`, padded to `rows` by repeating the first
    one; returns `(x, y, n_real)`."""
    x, y = data
    idx = np.arange(start, min(start + rows, _num(x)))
    pad = np.concatenate([idx, np.full(rows - len(idx), idx[0])])
    return _take(x, pad), np.asarray(y)[pad], len(idx)


def featurize_dataset(apply_fn: ApplyFn, params: Any, data: tuple[Any, np.ndarray], key: jax.Array, *,
                      wrt: KeyPath = None, proj_dim: int | None = 2048, proj_type: str = "normal",
                      block_size: int | None = None, batch_size: int = 256, mesh: Mesh | None = None,
                      cache_projection: bool | None = None, progress: bool = True,
                      desc: str = "TRAK features") -> tuple[np.ndarray, np.ndarray]:
    """Features `(N, k)` and Q `(N,)` of every example of `data = (x, y)`, in fixed-shape chunks.

    With a `mesh` (default: all devices when there are several) each chunk is sharded over the
    mesh's `'data'` axis and the parameters replicated; the chunk size is rounded up to a multiple
    of the device count and the last chunk padded (padding rows are dropped).
    `proj_type`: "normal" / "rademacher" (dense JL projection of the flat per-example gradient)
    or "factorized" (per-layer Kronecker-factored projection, `trak.factorized`).
    `cache_projection`: generate `P` once and reuse it for every chunk (same numbers, memory
    `n_params x k`); None = only when `P` takes at most `PROJ_CACHE_BYTES`; False = always
    regenerate block by block inside the kernel (memory O(block x k)).
    """
    n = _num(data[0])
    if mesh is None and jax.process_count() > 1:  # multi-process: each featurises a block of rows, one gather
        from gradtune_jax.distributed import gather_slices, local_mesh, split_range, to_host

        # (one device per process: vmap(grad) through a convolution on a batch sharded over several
        # devices gives wrong gradients on the non-first shards, XLA:CPU, jax 0.10.2)
        a, b = split_range(n)
        phi, q = featurize_dataset(apply_fn, to_host(params), _take_rows(data, a, b), key, wrt=wrt, proj_dim=proj_dim,
                                   proj_type=proj_type, block_size=block_size, batch_size=batch_size,
                                   mesh=local_mesh(1), cache_projection=cache_projection, progress=progress, desc=desc)
        return gather_slices(phi, n), gather_slices(q, n)
    mesh = default_mesh(mesh)
    bs = chunk_rows(n, batch_size, mesh)
    fn = make_featurizer(apply_fn, params, key, wrt=wrt, proj_dim=proj_dim, proj_type=proj_type,
                         block_size=block_size, mesh=mesh, cache_projection=cache_projection)
    phis, qs = [], []
    for s in progress_bar(range(0, n, bs), desc=desc, enabled=progress, unit="chunk"):
        x, y, n_real = padded_chunk(data, s, bs)
        phi_NK, q_N = fn(x, y)
        phis.append(phi_NK[:n_real])
        qs.append(q_N[:n_real])
    return np.concatenate(phis), np.concatenate(qs)


LOG = logging.getLogger("gradtune_jax.trak")


def log_kernel(m: int, info: dict) -> None:
    """Log checkpoint m's kernel report; a warning when it was rank deficient (pseudo-inverse)."""
    msg = (f"TRAK kernel [{m}]: k={info['k']} rank={info['rank']} condition={info['condition_number']:.3g} "
           f"method={info['method']}")
    (LOG.warning if info["method"] == "pinv" else LOG.info)(msg)


def _finish_scores(scores_NT: np.ndarray, tmp: str | None, out: str | None, q_sum_N: np.ndarray,
                   n_models: int, rows: int) -> np.ndarray:
    """traker's finalisation `tau = S / M * mean_m(Q_m)`, block by block; a memory-mapped output
    (`_open_out`) is flushed and moved into place atomically and returned read-only."""
    q_mean_N = (q_sum_N / n_models).astype(np.float32)
    for s in range(0, len(q_mean_N), rows):
        scores_NT[s:s + rows] = scores_NT[s:s + rows] / n_models * q_mean_N[s:s + rows, None]
    if tmp is None:
        return scores_NT
    scores_NT.flush()
    del scores_NT
    os.replace(tmp, out)
    return np.load(out, mmap_mode="r")


def _open_out(out: str | None, shape: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    if out is None:
        return np.zeros(shape, np.float32), None
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    arr[:] = 0.0
    return arr, tmp


def compute_scores(apply_fn: ApplyFn, checkpoints: Sequence[Any], train: tuple[Any, np.ndarray],
                   targets: tuple[Any, np.ndarray], proj_dim: int | None = 2048, lambda_reg: float = 0.0,
                   seed: int = 0, batch_size: int = 256, *, wrt: KeyPath = None, proj_type: str = "normal",
                   normalize: bool = True, block_size: int | None = None, score_rows: int = 8192,
                   out: str | None = None, mesh: Mesh | None = None, cache_projection: bool | None = None,
                   kernel_method: str = "auto", kernel_rtol: float | None = None, return_info: bool = False,
                   store: str | None = None, data_fingerprint: str | None = None,
                   progress: bool = True) -> np.ndarray | tuple[np.ndarray, dict]:
    """TRAK attribution scores `tau (n_train, n_targets)`; positive = train example i raises the
    target's margin.

    Args:
      apply_fn: `apply_fn(params, x) -> logits (N, C)` (eval mode; close over BatchNorm stats or
        pass them inside `params` and pick the trainable part with `wrt`).
      checkpoints: parameter pytrees of the ensemble (M >= 1); checkpoint m projects with
        `fold_in(key(seed), m)`.
      train, targets: `(x, y)` pairs; `x` an array, lazy array-like or pytree with a leading axis.
      proj_dim: projection dimension k; None = no projection (exact, small models only).
      lambda_reg: ridge term added to `X^T X`.
      seed: seed of the projections.
      batch_size: featurisation chunk size.
      wrt: key or key path of the parameters to differentiate (None = all; e.g. "head").
      proj_type: "normal" or "rademacher".
      normalize: divide the kernel inverse by its mean absolute entry (traker; default on).
      block_size: rows of the projection generated at a time (default ~8M entries per block).
      score_rows: train rows per scoring block.
      out: optional `.npy` path; the scores are then a memory map written block by block.
      mesh: device mesh for sharded featurisation (default: all devices when several).
      cache_projection: materialise each checkpoint's projection once (see `featurize_dataset`).
      kernel_method: "auto" (default: inverse when `X^T X + lambda I` has full numerical rank,
        else the pseudo-inverse on its eigenspace above the tolerance), "pinv" or "inverse"
        (raises on a rank-deficient matrix); see `trak.kernels.kernel_inverse_info`.
      kernel_rtol: eigenvalues below `kernel_rtol * eig_max` count as zero (default: the
        `(100 eps32)**2 trace(X^T X)` of `trak.kernels.kernel_tolerance`).
      return_info: also return `{"kernel": [per-checkpoint {"k", "rank", "condition_number",
        "method", ...}]}`; the report is logged (logger `gradtune_jax.trak`) either way.
      store: a folder: featurise into a resumable on-disk feature store there (`trak.store`: one
        subfolder per configuration, chunk files + manifests; a killed run resumes at the next
        chunk) and score out of core from it.
      data_fingerprint: with `store`, a string naming the train/target data (default: a hash of
        their contents).
      progress: show progress (tqdm bars on a terminal, log lines otherwise).
    """
    if not checkpoints:
        raise ValueError("compute_scores needs at least one checkpoint")
    if store is not None:
        from gradtune_jax.trak.store import FeatureStore
        fs = FeatureStore.open(store, checkpoints, train, targets, proj_dim=proj_dim, seed=seed,
                               batch_size=batch_size, wrt=wrt, proj_type=proj_type, block_size=block_size,
                               mesh=mesh, data_fingerprint=data_fingerprint)
        if mesh is None and jax.process_count() > 1:  # multi-process: shard i of n each, then all finalise
            from gradtune_jax.distributed import local_mesh, sync, to_host

            fs.featurize(apply_fn, to_host(list(checkpoints)), train, targets, mesh=local_mesh(1),
                         shard=(jax.process_index(), jax.process_count()), cache_projection=cache_projection,
                         progress=progress)
            sync(f"trak-store-{os.path.basename(fs.path)}")
            out = out if jax.process_index() == 0 else None
        else:
            fs.featurize(apply_fn, checkpoints, train, targets, mesh=mesh, cache_projection=cache_projection,
                         progress=progress)
        scores_NT, info = fs.finalize(lambda_reg, normalize=normalize, out=out, kernel_method=kernel_method,
                                      kernel_rtol=kernel_rtol, progress=progress)
        return (scores_NT, info) if return_info else scores_NT
    n_train, n_targets = _num(train[0]), _num(targets[0])
    if out is not None and jax.process_index() != 0:  # multi-process: every process computes, one writes
        out = None
    scores_NT, tmp = _open_out(out, (n_train, n_targets))
    q_sum_N = np.zeros(n_train, np.float64)
    infos: list[dict] = []
    base_key = jax.random.key(seed)
    kw = dict(wrt=wrt, proj_dim=proj_dim, proj_type=proj_type, block_size=block_size,
              batch_size=batch_size, mesh=mesh, cache_projection=cache_projection, progress=progress)
    for m, params in enumerate(progress_bar(checkpoints, desc="TRAK checkpoints", enabled=progress)):
        key = jax.random.fold_in(base_key, m)
        x_NK, q_N = featurize_dataset(apply_fn, params, train, key, desc=f"train features [{m}]", **kw)
        phi_TK, _ = featurize_dataset(apply_fn, params, targets, key, desc=f"target features [{m}]", **kw)
        xtx_KK = sum(gram64(x_NK[s:s + score_rows]) for s in range(0, n_train, score_rows))
        kinv, kinfo = kernel_inverse_info(xtx_KK, lambda_reg, normalize, method=kernel_method, rtol=kernel_rtol)
        log_kernel(m, kinfo)
        infos.append(kinfo)
        kinv_KK = jnp.asarray(kinv)
        phi_TK = jnp.asarray(phi_TK)
        for s in range(0, n_train, score_rows):
            scores_NT[s:s + score_rows] += np.asarray(score_block(x_NK[s:s + score_rows], kinv_KK, phi_TK))
        q_sum_N += q_N
    scores_NT = _finish_scores(scores_NT, tmp, out, q_sum_N, len(checkpoints), score_rows)
    return (scores_NT, {"kernel": infos}) if return_info else scores_NT
