"""GradTune Fig. 1(b) / Fig. 2 (and appendix Fig. 4): per-group distribution of the last-layer
gradient norms of the ERM model on the held-out set D, pooled over seeds, and each group's share
of the top-k.

    python -m experiments.gradnorms                       # embedded digits, 3 seeds
    python -m experiments.gradnorms --dataset waterbirds --data-dir PATH --weights W
    python -m experiments.gradnorms --quick --out /tmp/gn

Writes `gradnorms.md`, `gradnorms.csv` (per group, percent where noted), `gradnorms.png`,
`norms.npz` (per seed: norms and groups of D) and `results.json` into `--out`.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

import numpy as np

from experiments import cli, common, plots
from gradtune_jax.io import atomic_save_npz
from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.methods.gradtune import heldout_grad_norms

MODULE = "experiments.gradnorms"
CSV_COLUMNS = ("dataset", "group", "n_heldout", "norm_mean", "norm_std", "norm_median", "topk_share_mean",
               "topk_share_std", "in_topk_mean", "in_topk_std")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="GradTune Fig. 2: last-layer gradient norms of the ERM model on the "
                                          "held-out set per group, and the groups' share of the top-k.")
    cli.add_data_args(p)
    cli.add_run_args(p, "gradnorms")
    cli.add_erm_args(p)
    cli.add_size_args(p)
    return p


def seed_stats(fs: FeatureSet, k: int) -> dict:
    """Norms on D and, per group: size, mean and median norm, share of the top-k, fraction in it."""
    norms = heldout_grad_norms(fs)
    masks = np.asarray(fs.D.masks(), bool)
    k = min(k, len(norms))
    top = np.zeros(len(norms), bool)
    top[np.argsort(-norms, kind="stable")[:k]] = True  # the top-k of `gradtune_select`
    n = masks.sum(0)
    in_top = (masks & top[:, None]).sum(0)
    groups = [norms[masks[:, g]] for g in range(masks.shape[1])]
    return {"norms": norms, "groups": groups, "k": k, "n": n.tolist(),
            "mean": [float(v.mean()) if len(v) else float("nan") for v in groups],
            "share": (in_top / max(k, 1)).tolist(), "in_topk": np.where(n > 0, in_top / np.maximum(n, 1), np.nan).tolist(),
            "threshold": float(np.sort(norms)[::-1][k - 1]) if k else float("nan")}


def summarise(stats: dict[int, dict], names: Sequence[str], dataset: str) -> tuple[list, list, list]:
    """CSV rows, Markdown rows and JSON summary rows, one per group."""
    csv_rows, md_rows, summary = [], [], []
    for g, name in enumerate(names):
        n = np.mean([s["n"][g] for s in stats.values()])
        mean = cli.np_stats([s["mean"][g] for s in stats.values()])
        median = float(np.median(np.concatenate([s["groups"][g] for s in stats.values()])))
        share = cli.np_stats([100 * s["share"][g] for s in stats.values()])
        in_top = cli.np_stats([100 * s["in_topk"][g] for s in stats.values()])
        csv_rows.append([dataset, name, f"{n:.0f}", f"{mean[0]:.4f}", f"{mean[1]:.4f}", f"{median:.4f}",
                         f"{share[0]:.2f}", f"{share[1]:.2f}", f"{in_top[0]:.2f}", f"{in_top[1]:.2f}"])
        md_rows.append([name, f"{n:.0f}", f"{mean[0]:.3f} ± {mean[1]:.3f}", f"{median:.3f}", common.pm(*share),
                        common.pm(*in_top)])
        summary.append({"group": name, "n_heldout": n, "norm_mean": mean[0], "norm_std": mean[1],
                        "norm_median": median, "topk_share": share[0], "topk_share_std": share[1],
                        "in_topk": in_top[0], "in_topk_std": in_top[1]})
    return csv_rows, md_rows, summary


def plot(stats: dict[int, dict], names: Sequence[str], title: str, path: str) -> None:
    """Left: violins of log10 norms per group pooled over seeds, the top-k threshold dashed.
    Right: each group's share of the top-k (mean ± std over seeds)."""
    fig, (ax, bx) = plots.subplots(2, size=(4.6, 3.6))
    pooled = [np.concatenate([s["groups"][g] for s in stats.values()]) for g in range(len(names))]
    plots.violins(ax, pooled, names)
    ax.axhline(np.log10(np.mean([s["threshold"] for s in stats.values()])), ls="--", color="gray",
               label=f"top-k threshold (k={next(iter(stats.values()))['k']})")
    ax.set_ylabel("log10 last-layer grad norm")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    share = np.array([[100 * v for v in s["share"]] for s in stats.values()])
    bx.bar(range(len(names)), share.mean(0), yerr=share.std(0), color="tab:orange", capsize=3)
    bx.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    bx.set_ylabel("share of the top-k (%)")
    bx.set_title(f"groups inside the top-k ({len(stats)} seeds)", fontsize=9)
    plots.save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    cfg, ds = cli.load(args)
    out = cli.out_dir(args, "gradnorms")
    fsets = cli.feature_sets(ds, cfg, args, out)
    stats = {s: seed_stats(fs, cfg.gradtune.k) for s, fs in fsets.items()}
    names = ds.names_of_groups()
    csv_rows, md_rows, summary = summarise(stats, names, ds.name)
    k = next(iter(stats.values()))["k"]
    md = common.markdown_table(["Group", "n in D", "Mean grad norm (± std over seeds)", "Median",
                                f"Share of top-{k} (%)", f"Group in top-{k} (%)"], md_rows)
    title = (f"# GradTune Fig. 2 on `{ds.name}`: last-layer gradient norms of ERM on the held-out set "
             f"({len(stats)} seeds)\n\nCommand: `{cli.command_line(MODULE, argv)}`\n\n![gradnorms](gradnorms.png)\n\n")
    common.atomic_write_text(os.path.join(out, "gradnorms.md"), title + md)
    common.write_csv(os.path.join(out, "gradnorms.csv"), CSV_COLUMNS, csv_rows)
    plot(stats, names, f"{ds.name}: held-out gradient norms", os.path.join(out, "gradnorms.png"))
    atomic_save_npz(os.path.join(out, "norms.npz"),
                    **{f"seed{s}_{key}": arr for s, fs in fsets.items()
                       for key, arr in (("norms", stats[s]["norms"]), ("g", fs.D.g))})
    seconds = time.perf_counter() - t0
    cli.write_results(out, "gradnorms", ds, cfg, argv, MODULE, seconds, k=k, summary=summary,
                      per_seed={str(s): {key: st[key] for key in ("n", "mean", "share", "in_topk", "threshold")}
                                for s, st in stats.items()})
    print("\n" + md)
    print(f"wrote {out}/gradnorms.md, gradnorms.csv, gradnorms.png, norms.npz, results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
