"""Resumable, shardable on-disk TRAK feature store; out-of-core scoring from it.

Layout of one store (`root/trak-<key>/`, `key` = 16 hex digits of the SHA-256 of everything
that produced the features):

    meta.json                      the key's contents (checkpoint fingerprints, data fingerprint,
                                   projection settings, seed, chunk sizes, format version)
    m{m}/train-{c:06d}.npz         train features X (rows, k) float32 and Q (rows,) of chunk c
    m{m}/target-{c:06d}.npz        target features of chunk c
    manifest-{i}of{n}.json         the units (checkpoint, split, chunk) shard i of n completed

A unit's chunk file is written atomically (temporary file + rename) before the unit enters its
shard's manifest (also rewritten atomically), so a process killed at any point (SIGKILL
included) loses at most the chunk in flight; the next run skips every unit listed in any
manifest. `featurize(shard=(i, n))` computes units `i, i + n, i + 2n, ...` of the fixed unit
list (checkpoint-major, train chunks then target chunks), so n processes or jobs featurise
disjoint slices and `finalize` (any process, once all units are listed) combines them: the
Gram matrix `X^T X` accumulated in float64 chunk by chunk, the rank-safe kernel inverse, and
`S += (X_c K) Phi^T` train chunk by train chunk into an optional memory-mapped `.npy`
(`n_train x n_targets` never in memory when `out` is given; the target features `Phi` of one
checkpoint are).

A store whose `meta.json` does not match the requested configuration is refused (`UserError`);
a different configuration gets a different folder. The model's code (`apply_fn`) cannot be
hashed: pass `extra={...}` (e.g. the architecture's name) when one parameter tree can belong to
several models.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gradtune_jax.errors import UserError
from gradtune_jax.io import atomic_save_npz, atomic_write_json
from gradtune_jax.progress import progress as progress_bar
from gradtune_jax.trak.kernels import ApplyFn, gram64, kernel_inverse_info, score_block
from gradtune_jax.trak.scores import (_finish_scores, _num, _open_out, chunk_rows, default_mesh, log_kernel, make_featurizer,
                                      padded_chunk)

FORMAT = 1
SPLITS = ("train", "target")
Unit = tuple[int, str, int]  # (checkpoint, split, chunk)


def _sha256() -> Any:
    return hashlib.sha256()


def params_fingerprint(params: Any) -> str:
    """SHA-256 of a parameter pytree: every leaf's path, dtype, shape and bytes."""
    h = _sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fingerprint_data(*datasets: tuple[Any, np.ndarray], rows: int = 4096) -> str:
    """SHA-256 of `(x, y)` datasets, read `rows` at a time (x may be a lazy array or a pytree)."""
    h = _sha256()
    for x, y in datasets:
        n = _num(x)
        h.update(f"n={n}|".encode())
        for leaf in jax.tree.leaves(x):
            for s in range(0, n, rows):
                a = np.ascontiguousarray(np.asarray(leaf[s:s + rows]))
                h.update(f"{a.dtype}|{a.shape}|".encode())
                h.update(a.tobytes())
        h.update(np.ascontiguousarray(np.asarray(y)).astype(np.int64).tobytes())
    return h.hexdigest()


def _key_path(wrt: Any) -> Any:
    return None if wrt is None else [wrt] if isinstance(wrt, str) else list(wrt)


@dataclasses.dataclass
class FeatureStore:
    """One store folder (`path`) and its configuration (`meta`, the contents of meta.json)."""

    path: str
    meta: dict

    @classmethod
    def open(cls, root: str, checkpoints: Sequence[Any], train: tuple[Any, np.ndarray],
             targets: tuple[Any, np.ndarray], *, proj_dim: int | None = 2048, seed: int = 0, batch_size: int = 256,
             wrt: Any = None, proj_type: str = "normal", block_size: int | None = None, mesh: Mesh | None = None,
             data_fingerprint: str | None = None, extra: dict | None = None) -> FeatureStore:
        """The store of this configuration under `root` (created when new; refused when its
        meta.json disagrees). Arguments as `compute_scores`; `data_fingerprint` defaults to a
        hash of the train and target data."""
        mesh = default_mesh(mesh)
        n_train, n_targets = _num(train[0]), _num(targets[0])
        if not checkpoints:
            raise UserError("feature store: expected at least one checkpoint")
        key = {"format": FORMAT, "checkpoints": [params_fingerprint(p) for p in checkpoints],
               "data": data_fingerprint or fingerprint_data(train, targets),
               "n_train": n_train, "n_targets": n_targets, "proj_dim": proj_dim, "proj_type": proj_type,
               "wrt": _key_path(wrt), "block_size": block_size, "seed": seed,
               "chunk_rows": {"train": chunk_rows(n_train, batch_size, mesh),
                              "target": chunk_rows(n_targets, batch_size, mesh)},
               "extra": extra or {}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = os.path.join(root, f"trak-{digest}")
        meta_path = os.path.join(path, "meta.json")
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                saved = json.load(f)
            if saved != json.loads(json.dumps(key)):
                diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != json.loads(json.dumps(key)).get(k))
                raise UserError(f"feature store {path}: meta.json differs from this configuration in {diff}; "
                                f"expected a store made by the same checkpoints, data and settings (delete it)")
        else:
            os.makedirs(path, exist_ok=True)
            atomic_write_json(meta_path, key)
        return cls(path, key)

    # -- units and manifests ------------------------------------------------------------------
    def n_chunks(self, split: str) -> int:
        n = self.meta["n_train" if split == "train" else "n_targets"]
        return -(-n // self.meta["chunk_rows"][split])

    def units(self) -> list[Unit]:
        """Every unit, checkpoint-major, train chunks before target chunks."""
        return [(m, split, c) for m in range(len(self.meta["checkpoints"])) for split in SPLITS
                for c in range(self.n_chunks(split))]

    def chunk_path(self, unit: Unit) -> str:
        m, split, c = unit
        return os.path.join(self.path, f"m{m}", f"{split}-{c:06d}.npz")

    def _manifest_path(self, shard: tuple[int, int]) -> str:
        return os.path.join(self.path, f"manifest-{shard[0]}of{shard[1]}.json")

    def completed(self) -> set[Unit]:
        """Units listed in any shard's manifest."""
        done: set[Unit] = set()
        for p in glob.glob(os.path.join(self.path, "manifest-*.json")):
            with open(p) as f:
                done |= {(int(m), str(s), int(c)) for m, s, c in json.load(f)["done"]}
        return done

    def missing(self) -> list[Unit]:
        done = self.completed()
        return [u for u in self.units() if u not in done]

    # -- featurisation ---------------------------------------------------------------------------
    def featurize(self, apply_fn: ApplyFn, checkpoints: Sequence[Any], train: tuple[Any, np.ndarray],
                  targets: tuple[Any, np.ndarray], *, shard: tuple[int, int] = (0, 1), mesh: Mesh | None = None,
                  cache_projection: bool | None = None, progress: bool = True,
                  on_chunk: Callable[[Unit], None] | None = None) -> int:
        """Compute this shard's units that no manifest lists yet; returns how many were computed.

        `checkpoints`, `train`, `targets` must be those the store was opened with (their
        fingerprints are checked). `on_chunk(unit)` is called after each unit is recorded.
        """
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
            raise UserError(f"shard: expected (i, n) with 0 <= i < n, got {shard!r}")
        if [params_fingerprint(p) for p in checkpoints] != self.meta["checkpoints"]:
            raise UserError(f"feature store {self.path}: the checkpoints differ from those it was opened with")
        mesh = default_mesh(mesh)
        done = self.completed()
        todo = [u for u in self.units()[i::n] if u not in done]
        manifest = self._manifest_path(shard)
        mine: list[list] = []
        if os.path.exists(manifest):
            with open(manifest) as f:
                mine = json.load(f)["done"]
        data = {"train": train, "target": targets}
        base_key = jax.random.key(self.meta["seed"])
        bar = progress_bar(total=len(todo), desc=f"TRAK feature store shard {i}/{n}", unit="chunk", enabled=progress)
        fn, fn_m = None, -1
        for unit in todo:
            m, split, c = unit
            if fn_m != m:
                fn = make_featurizer(apply_fn, checkpoints[m], jax.random.fold_in(base_key, m),
                                     wrt=self.meta["wrt"] if self.meta["wrt"] is None else tuple(self.meta["wrt"]),
                                     proj_dim=self.meta["proj_dim"], proj_type=self.meta["proj_type"],
                                     block_size=self.meta["block_size"], mesh=mesh, cache_projection=cache_projection)
                fn_m = m
            rows = self.meta["chunk_rows"][split]
            x, y, n_real = padded_chunk(data[split], c * rows, rows)
            phi_NK, q_N = fn(x, y)
            os.makedirs(os.path.dirname(self.chunk_path(unit)), exist_ok=True)
            atomic_save_npz(self.chunk_path(unit), X=phi_NK[:n_real], Q=q_N[:n_real])
            mine.append([m, split, c])
            atomic_write_json(manifest, {"shard": [i, n], "done": mine})
            bar.update(1)
            if on_chunk is not None:
                on_chunk(unit)
        bar.close()
        return len(todo)

    def _load(self, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.chunk_path(unit)) as z:
            return z["X"], z["Q"]

    # -- scoring -----------------------------------------------------------------------------------
    def finalize(self, lambda_reg: float = 0.0, *, normalize: bool = True, out: str | None = None,
                 kernel_method: str = "auto", kernel_rtol: float | None = None,
                 progress: bool = True) -> tuple[np.ndarray, dict]:
        """TRAK scores `(n_train, n_targets)` from the completed store, out of core, and the
        kernel report `{"kernel": [...], "store": path}` (as `compute_scores(return_info=True)`)."""
        missing = self.missing()
        if missing:
            raise UserError(f"feature store {self.path}: {len(missing)} of {len(self.units())} chunks not featurised "
                            f"yet (first {missing[0]}); expected every shard to have finished")
        n_train, n_targets = self.meta["n_train"], self.meta["n_targets"]
        n_models = len(self.meta["checkpoints"])
        scores_NT, tmp = _open_out(out, (n_train, n_targets))
        q_sum_N = np.zeros(n_train, np.float64)
        rows = self.meta["chunk_rows"]["train"]
        infos = []
        for m in progress_bar(range(n_models), desc="TRAK finalise", enabled=progress):
            train_units = [(m, "train", c) for c in range(self.n_chunks("train"))]
            xtx_KK = None
            for u in train_units:
                g = gram64(self._load(u)[0])
                xtx_KK = g if xtx_KK is None else xtx_KK + g
            kinv, kinfo = kernel_inverse_info(xtx_KK, lambda_reg, normalize, method=kernel_method, rtol=kernel_rtol)
            log_kernel(m, kinfo)
            infos.append(kinfo)
            kinv_KK = jnp.asarray(kinv)
            phi_TK = jnp.asarray(np.concatenate([self._load((m, "target", c))[0]
                                                 for c in range(self.n_chunks("target"))]))
            for u in train_units:
                x_NK, q_N = self._load(u)
                s = u[2] * rows
                scores_NT[s:s + len(x_NK)] += np.asarray(score_block(jnp.asarray(x_NK), kinv_KK, phi_TK))
                q_sum_N[s:s + len(x_NK)] += q_N
        return _finish_scores(scores_NT, tmp, out, q_sum_N, n_models, rows), {"kernel": infos, "store": self.path}
