"""Run methods over seeds on one dataset: shared ERM model and feature cache per seed, one
`MethodOutput` per (seed, method), metrics on the test split."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

from gradtune_jax.progress import progress as progress_bar

from gradtune_jax.data.dataset import GroupDataset, dataset_fingerprint
from gradtune_jax.io import atomic_write_json
from gradtune_jax.methods.erm import erm_feature_set
from gradtune_jax.methods.registry import RunContext, get_method
from gradtune_jax.metrics import evaluate
from gradtune_jax.train.recipe import digest


def run_methods(ds: GroupDataset, cfg, methods: Sequence[str], seeds: Sequence[int], out: str, *,
                hparams: dict | None = None, selection: str = "fixed", progress: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """`{method: {seed: {"metrics", "info", "selection", "seconds", "reused"}}}`; every model a
    method trains starts from `cfg.recipe` (the reweighting baselines' from `cfg.retrain_recipe`
    when the paper gives one). The ERM row's seconds are its training's, also when reused."""
    counts = ds.train.group_counts() if getattr(cfg, "waterbirds_like", False) and ds.n_groups == 4 else None
    results: dict = {m: {} for m in methods}
    for seed in progress_bar(seeds, desc="seeds", unit="seed", enabled=progress and len(seeds) > 1):
        run = erm_feature_set(ds, cfg.recipe, seed, out, progress=progress, log=log)
        fs = run.fs
        d_note = heldout_note(len(fs.heldout), cfg.gradtune.size, methods)
        if d_note:
            log(f"seed {seed}: {d_note}")
        for name in methods:
            method = get_method(name)
            sel = selection if selection in method.selections else method.selections[0]
            ctx = RunContext(ds=ds, fs=fs, seed=seed, workdir=os.path.join(out, f"seed{seed}", name),
                             recipe=cfg.recipe, retrain_recipe=getattr(cfg, "retrain_recipe", None),
                             hparams=hparams or {}, selection=sel, progress=progress)
            row_path = os.path.join(out, f"rows-{row_key(run, name, sel, hparams, cfg)}", f"seed{seed}", f"{name}.json")
            if os.path.exists(row_path):  # a finished row of this exact configuration: keep its result
                with open(row_path) as f:
                    results[name][seed] = {**json.load(f), "reused": True}
            else:
                t = time.perf_counter()
                res = method.run(ctx)
                info = _jsonable(res.info)
                if name == "erm":
                    info["recipe"] = cfg.recipe.describe()
                row = {"metrics": evaluate(res.pred_test, ds.test.y, ds.test.masks(), counts), "info": info,
                       "selection": res.selection,
                       "seconds": time.perf_counter() - t + (run.seconds if name == "erm" else 0.0)}
                atomic_write_json(row_path, row)
                results[name][seed] = {**row, "reused": run.reused if name == "erm" else False}
            if d_note and name in SUBSAMPLE_D:  # said in results.json too, next to the row it explains
                results[name][seed]["heldout_note"] = d_note
            metrics = results[name][seed]["metrics"]
            log(f"seed {seed} {method.label:<24} avg {100 * metrics['avg']:.1f}  wga {100 * metrics['wga']:.1f}")
    return results


def row_key(run, method: str, selection: str, hparams: dict | None, cfg) -> str:
    """What one (method, seed) row depends on beyond the seed: the ERM run (dataset, recipe,
    versions: its folder), the method, its selection regime, its settings and the reweighting
    recipe. Names the folder of the finished rows."""
    retrain = getattr(cfg, "retrain_recipe", None)
    erm = (os.path.basename(os.path.dirname(run.folder)) if run.folder
           else f"features-{dataset_fingerprint(run.fs.ds)}-{cfg.recipe.fingerprint()}")
    return digest({"erm": erm, "method": method,
                   "selection": selection, "hparams": repr(sorted((hparams or {}).items())),
                   "retrain": retrain.fingerprint() if retrain is not None else None,
                   "counts": getattr(cfg, "waterbirds_like", False)})


SUBSAMPLE_D = {"gradtune": "GradTune", "random_finetune": "Random finetune", "self": "SELF"}  # pick M' of D


def heldout_note(n_heldout: int, size: int, methods: Sequence[str]) -> str | None:
    """The note logged (and stored with each affected row) when the held-out set D has no more
    examples than M': the methods that subsample D then fine-tune on all of D."""
    names = [SUBSAMPLE_D[m] for m in methods if m in SUBSAMPLE_D]
    if n_heldout > size or not names:
        return None
    core = [n for n in names if n != "SELF"]
    parts = []
    if len(core) == 2:
        parts.append("GradTune and Random finetune both fine-tune on all of D (the same set, no subsampling)")
    elif core:
        parts.append(f"{core[0]} fine-tunes on all of D (no subsampling)")
    if "SELF" in names:
        parts.append(f"SELF's sizes >= {n_heldout} all use all of D")
    rel = "<" if n_heldout < size else "="
    return f"held-out set D has {n_heldout} examples {rel} M'={size}: " + "; ".join(parts)


def _jsonable(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if hasattr(v, "shape") and getattr(v, "size", 0) > 32:
            continue  # large arrays (indices, norms) stay out of results.json
        out[k] = v.tolist() if hasattr(v, "tolist") else v
    return out


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
