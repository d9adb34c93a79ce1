"""Run methods over seeds on one dataset: shared ERM model and feature cache per seed, one
`MethodOutput` per (seed, method), metrics on the test split."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

from gradtune_jax.progress import progress as progress_bar

from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.errors import UserError
from gradtune_jax.methods.erm import erm_feature_set
from gradtune_jax.methods.registry import RunContext, get_method
from gradtune_jax.metrics import WATERBIRDS_TRAIN_COUNTS, evaluate


def pretrained_init(model: str, weights: str | None, n_classes: int) -> Callable | None:
    """`init_variables_fn(model, seed)` loading pretrained backbone weights, or None."""
    if weights is None:
        return None
    if not os.path.exists(weights):
        raise UserError(f"--weights {weights}: no such file or folder")
    if model.startswith("resnet"):
        from gradtune_jax.models.resnet import load_torchvision_weights

        depth = int("".join(c for c in model[len("resnet"):] if c.isdigit()) or 50)
        return lambda _m, seed: load_torchvision_weights(weights, depth=depth, num_classes=n_classes, seed=seed)
    if model.startswith("bert"):
        from gradtune_jax.models.bert import load_hf_bert

        return lambda _m, seed: load_hf_bert(weights, num_labels=n_classes, seed=seed)[1]
    raise UserError(f"--weights is supported for resnet* and bert* models, not {model!r}")


def run_methods(ds: GroupDataset, cfg, methods: Sequence[str], seeds: Sequence[int], out: str, *,
                hparams: dict | None = None, selection: str = "fixed", progress: bool = True,
                init_variables_fn: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """`{method: {seed: {"metrics": ..., "info": ..., "selection": ..., "seconds": ...}}}`."""
    counts = WATERBIRDS_TRAIN_COUNTS if getattr(cfg, "waterbirds_like", False) and ds.n_groups == 4 else None
    results: dict = {m: {} for m in methods}
    for seed in progress_bar(seeds, desc="seeds", unit="seed", enabled=progress and len(seeds) > 1):
        t0 = time.perf_counter()
        fs, _ = erm_feature_set(ds, cfg.erm, seed, out, progress=progress, init_variables_fn=init_variables_fn,
                                log=log)
        erm_seconds = time.perf_counter() - t0
        if len(fs.heldout) < cfg.gradtune.size:
            log(f"seed {seed}: held-out set has {len(fs.heldout)} < M'={cfg.gradtune.size} examples; using all of it")
        for name in methods:
            method = get_method(name)
            sel = selection if selection in method.selections else method.selections[0]
            ctx = RunContext(ds=ds, fs=fs, seed=seed, workdir=os.path.join(out, f"seed{seed}", name),
                             config=cfg, hparams=hparams or {}, selection=sel, progress=progress)
            t = time.perf_counter()
            res = method.run(ctx)
            metrics = evaluate(res.pred_test, ds.test.y, ds.test.masks(), counts)
            results[name][seed] = {"metrics": metrics, "info": _jsonable(res.info), "selection": res.selection,
                                   "seconds": time.perf_counter() - t + (erm_seconds if name == "erm" else 0.0)}
            log(f"seed {seed} {method.label:<24} avg {100 * metrics['avg']:.1f}  wga {100 * metrics['wga']:.1f}")
    return results


def _jsonable(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if hasattr(v, "shape") and getattr(v, "size", 0) > 32:
            continue  # large arrays (indices, norms) stay out of results.json
        out[k] = v.tolist() if hasattr(v, "tolist") else v
    return out


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
