"""Auto-TRAK's discovery matrix re-decided with the rank-safe kernel (issue 13).

For each seed: one ERM run of the embedded default (the `experiments.debias_table` recipe, its 3
checkpoints), then TRAK of the whole validation split w.r.t. each candidate parameter set
(all parameters, the head, the penultimate layer), each split into Auto-TRAK pseudo-groups.

The choice rule looks only at the VALIDATION split's class labels and the ERM model's validation
losses (no group labels, no test data): the candidate whose pseudo-groups separate the
validation loss most, `gap = mean over classes of |mean loss(pseudo-group a) - mean loss(b)|`
(alignment weights each group by its mean validation loss, so a split without a loss gap gives
it nothing to work with), averaged over the seeds. ARI and minority recall against the true
validation groups are printed for the record and are not used by the rule.

    python -m tools.trak_discovery --out runs/trak_discovery [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from experiments import cli, debias_table
from experiments.debias_table import minority_groups
from gradtune_jax.io import atomic_write_json
from gradtune_jax.methods import debias

CANDIDATES = {"all": "params", "head": ("params", "head"), "penultimate": ("params", "backbone", "Conv_2")}


def loss_gap(pseudo_V: np.ndarray, y_V: np.ndarray, loss_V: np.ndarray) -> float:
    """Mean over classes of the absolute difference of the two pseudo-groups' mean losses."""
    gaps = []
    for c in np.unique(y_V):
        cls = y_V == c
        means = [float(np.mean(loss_V[cls & (pseudo_V == g)])) for g in np.unique(pseudo_V[cls])]
        gaps.append(max(means) - min(means) if len(means) > 1 else 0.0)
    return float(np.mean(gaps))


def run_seed(ds, cfg, seed: int, proj_dim: int, path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    tcfg = debias.TrakConfig(proj_dim=proj_dim)
    epochs = debias.checkpoint_epochs(cfg.recipe.epochs, tcfg.n_checkpoints)
    t0 = time.perf_counter()
    states = debias.train_with_checkpoints(ds, cfg.recipe, seed, epochs, progress=False)
    loss_V = debias.val_losses(states[-1], ds.val)
    out = {"seed": seed, "erm_seconds": time.perf_counter() - t0, "candidates": {}}
    for name, wrt in CANDIDATES.items():
        t0 = time.perf_counter()
        info: dict = {}
        tau = debias.val_attribution(states, ds.train, ds.val, debias.TrakConfig(proj_dim=proj_dim, wrt=wrt), seed,
                                     progress=False, info=info)
        pseudo, _ = debias.auto_trak_groups(tau, ds.val.y)
        agree = debias.group_agreement(pseudo, ds.val.g, ds.val.y, loss_V, minority_groups(ds))
        out["candidates"][name] = {"wrt": wrt, "loss_gap": loss_gap(pseudo, ds.val.y, loss_V), **agree,
                                   "kernel": info["kernel"], "seconds": time.perf_counter() - t0}
        print(f"seed {seed} {name:12s} gap {out['candidates'][name]['loss_gap']:.3f}  ARI {agree['ari']:.3f}  "
              f"recall {agree['minority_recall']:.3f}  ranks {[k['rank'] for k in info['kernel']]}  "
              f"({out['candidates'][name]['seconds']:.0f} s)", flush=True)
    atomic_write_json(path, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/trak_discovery")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--proj-dim", type=int, default=2048)
    a = p.parse_args(argv)
    args = debias_table.build_parser().parse_args(["--out", a.out])
    cfg, ds = cli.load(args)
    t0 = time.perf_counter()
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = [run_seed(ds, cfg, s, a.proj_dim, os.path.join(a.out, f"seed{s}.json")) for s in seeds]
    summary = {}
    for name in CANDIDATES:
        vals = {k: [r["candidates"][name][k] for r in rows] for k in ("loss_gap", "ari", "minority_recall")}
        summary[name] = {k: (float(np.mean(v)), float(np.std(v)), v) for k, v in vals.items()}
    choice = max(summary, key=lambda n: summary[n]["loss_gap"][0])
    print("\n| Discovery matrix | loss gap (rule) | ARI | minority recall |\n|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name}{' (chosen)' if name == choice else ''} | {s['loss_gap'][0]:.3f} ± {s['loss_gap'][1]:.3f} | "
              f"{s['ari'][0]:.3f} ± {s['ari'][1]:.3f} | {s['minority_recall'][0]:.3f} ± {s['minority_recall'][1]:.3f} |")
    atomic_write_json(os.path.join(a.out, "summary.json"), {"seeds": seeds, "proj_dim": a.proj_dim, "rule": "max mean "
                      "validation loss gap between a class's two pseudo-groups (val class labels + ERM val losses "
                      "only)", "choice": choice, "summary": summary, "seconds": time.perf_counter() - t0})
    print(f"chosen by the loss-gap rule: {choice} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
