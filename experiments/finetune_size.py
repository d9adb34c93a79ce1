"""GradTune Fig. 3: worst-group accuracy versus the fine-tuning set size M' (k = 0.8 M'),
GradTune against Random finetune, mean ± std bands over seeds (ERM dashed).

    python -m experiments.finetune_size                   # embedded digits, M' in 20,100,250,500, 3 seeds
    python -m experiments.finetune_size --dataset celeba_blond --data-dir PATH --weights W
    python -m experiments.finetune_size --quick --out /tmp/fs
    python -m experiments.finetune_size --ks 5,50,100,200,300,400,450,495   # appendix Fig. 5: k at M'=500

Writes `finetune_size.md`, `finetune_size.csv` (percent), `finetune_size.png` and `results.json`.
With `--ks` the fine-tuning set size stays at M' (`--size`, default the preset's 500) and the
top-k part varies (GradTune's appendix Fig. 5 / Table 6): GradTune per k, Random finetune at M'
(independent of k) and ERM, with each GradTune row's worst group (lowest mean accuracy over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from typing import Sequence

import numpy as np

from experiments import cli, common, plots
from gradtune_jax.errors import UserError
from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.methods.gradtune import GradTuneConfig, gradtune, random_finetune

MODULE = "experiments.finetune_size"
SIZES = (20, 100, 250, 500)
QUICK_SIZES = (10, 20, 40)
METHODS = {"random_finetune": random_finetune, "gradtune": gradtune}
LABELS = {"erm": "ERM", "random_finetune": "Random finetune", "gradtune": "GradTune"}
CSV_COLUMNS = ("dataset", "size", "k", "method", "avg_mean", "avg_std", "wga_mean", "wga_std")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({common.positive_int(t) for t in text.split(",") if t.strip()})
    except Exception:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers like 20,100, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers like 20,100, got {text!r}")
    return sizes


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        ks = []
    if not ks or min(ks) < 0:
        raise argparse.ArgumentTypeError(f"ks must be non-negative integers like 5,50,495, got {text!r}")
    return ks


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="GradTune Fig. 3: WGA versus fine-tuning set size M' (k = 0.8 M'), "
                                          "GradTune against Random finetune.")
    cli.add_data_args(p)
    r = cli.add_run_args(p, "finetune_size")
    r.add_argument("--sizes", type=parse_sizes,
                   help=f"comma list of M' (default {','.join(map(str, SIZES))}; --quick: "
                        f"{','.join(map(str, QUICK_SIZES))})")
    r.add_argument("--ks", type=parse_ks,
                   help="comma list of top-k parts at a fixed M' (--size, default 500) instead of --sizes: "
                        "GradTune's appendix Fig. 5, e.g. 5,50,100,200,300,400,450,495")
    r.add_argument("--size", type=common.positive_int, help="M' of --ks (default: the preset's 500; --quick: 40)")
    cli.add_erm_args(p)
    cli.add_finetune_args(p)
    return p


def _head(method: str, gcfg: GradTuneConfig, fs: FeatureSet, seed: int) -> dict:
    return METHODS[method](fs, gcfg, seed)[0]


def variants(gt: GradTuneConfig, sizes: Sequence[int]) -> dict[str, cli.HeadFn]:
    """`"{method}@{size}"` -> head function, plus `"erm"` (the ERM head itself)."""
    out: dict[str, cli.HeadFn] = {"erm": lambda fs, seed: fs.head}
    for size in sizes:
        gcfg = dataclasses.replace(gt, size=size, k=int(0.8 * size))
        for m in METHODS:
            out[f"{m}@{size}"] = functools.partial(_head, m, gcfg)
    return out


def variants_k(gt: GradTuneConfig, ks: Sequence[int]) -> dict[str, cli.HeadFn]:
    """`"gradtune@k{k}"` at M' = `gt.size` for every k, plus `"random_finetune"` at M' and `"erm"`."""
    out: dict[str, cli.HeadFn] = {"erm": lambda fs, seed: fs.head,
                                  "random_finetune": functools.partial(_head, "random_finetune", gt)}
    for k in ks:
        out[f"gradtune@k{k}"] = functools.partial(_head, "gradtune", dataclasses.replace(gt, k=k))
    return out


def worst_group(per_seed: dict, group_names: Sequence[str]) -> str:
    """Name of the group with the lowest mean test accuracy over seeds."""
    acc = np.array([[np.nan if v is None else v for v in r["group_acc"]] for r in per_seed.values()])
    return group_names[int(np.nanargmin(np.nanmean(acc, 0)))]


def plot_k(results: dict, ks: Sequence[int], size: int, title: str, path: str) -> None:
    fig, axes = plots.subplots(2, size=(4.6, 3.6))
    for ax, key, name in zip(axes, ("avg", "wga"), ("average", "worst-group")):
        runs = np.array([[100 * results[f"gradtune@k{k}"][s][key] for k in ks] for s in results["erm"]])
        plots.band(ax, ks, runs, "GradTune", "o")
        for m, ls in (("random_finetune", "-."), ("erm", "--")):
            ax.axhline(np.mean([100 * r[key] for r in results[m].values()]), ls=ls, color="gray",
                       label=LABELS[m] + (f" (M'={size})" if m != "erm" else ""))
        ax.set_xlabel(f"top-k part of the fine-tuning set (M' = {size})")
        ax.set_ylabel(f"test {name} accuracy (%)")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    plots.save(fig, path)


def main_ks(args, argv, t0: float, cfg, ds) -> int:
    """The `--ks` mode: k varies at the fixed M' of the config."""
    size, ks = cfg.gradtune.size, args.ks
    if max(ks) > size:
        raise UserError(f"--ks must be at most the fine-tuning set size M'={size} (--size), got {max(ks)}")
    out = cli.out_dir(args, "finetune_size")
    fsets = cli.feature_sets(ds, cfg, args, out)
    n_heldout = min(len(fs.heldout) for fs in fsets.values())
    if size >= n_heldout:
        print(f"note: M'={size} >= {n_heldout} (the held-out set) uses all of it, so k changes nothing")
    results = cli.evaluate_heads(fsets, variants_k(cfg.gradtune, ks), cli.show_progress(args))
    meta = {"erm": ("erm", "", ""), "random_finetune": ("random_finetune", size, "")}
    meta |= {f"gradtune@k{k}": ("gradtune", size, k) for k in ks}
    labels = {"erm": "ERM", "random_finetune": f"Random finetune, M'={size}"}
    labels |= {f"gradtune@k{k}": f"GradTune, M'={size}, k={k}" for k in ks}
    csv_rows, md_rows = cli.summary_rows(results, labels)
    csv_rows = [[ds.name, meta[name][1], meta[name][2], meta[name][0], *stats] for name, *stats in csv_rows]
    groups = ds.names_of_groups()
    md_rows = [[*row, worst_group(results[name], groups)] for name, row in zip(labels, md_rows)]
    md = common.markdown_table(["Method", "Average", "WGA", "Worst group (lowest mean)"], md_rows)
    title = (f"# GradTune appendix Fig. 5 on `{ds.name}`: top-k part at M'={size} ({len(fsets)} seeds, test %, "
             f"mean ± std)\n\nCommand: `{cli.command_line(MODULE, argv)}`\n\n![finetune_size](finetune_size.png)\n\n")
    common.atomic_write_text(os.path.join(out, "finetune_size.md"), title + md)
    common.write_csv(os.path.join(out, "finetune_size.csv"), CSV_COLUMNS, csv_rows)
    plot_k(results, ks, size, f"{ds.name}: accuracy vs k at M'={size} ({len(fsets)} seeds)",
           os.path.join(out, "finetune_size.png"))
    seconds = time.perf_counter() - t0
    cli.write_results(out, "finetune_size", ds, cfg, argv, MODULE, seconds, size=size, ks=ks, n_heldout=n_heldout,
                      per_seed={name: {str(s): m for s, m in per.items()} for name, per in results.items()})
    print("\n" + md)
    print(f"wrote {out}/finetune_size.md, finetune_size.csv, finetune_size.png, results.json ({seconds:.0f} s)")
    return 0


def plot(results: dict, sizes: Sequence[int], title: str, path: str) -> None:
    fig, (ax,) = plots.subplots(1, size=(5.2, 3.8))
    for m, marker in zip(METHODS, "so"):
        runs = np.array([[100 * results[f"{m}@{n}"][s]["wga"] for n in sizes] for s in results["erm"]])
        plots.band(ax, sizes, runs, LABELS[m], marker)
    erm = [100 * r["wga"] for r in results["erm"].values()]
    ax.axhline(np.mean(erm), ls="--", color="gray", label="ERM")
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(n) for n in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("fine-tuning set size M' (k = 0.8 M')")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    plots.save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    if args.ks is not None and args.sizes is not None:
        raise UserError("give either --sizes (M' varies, k = 0.8 M') or --ks (k varies at M' = --size), not both")
    if args.ks is None and args.size is not None:
        raise UserError("--size applies to --ks only (--sizes sets M' and k = 0.8 M')")
    cfg, ds = cli.load(args)
    if args.ks is not None:
        return main_ks(args, argv, t0, cfg, ds)
    sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)
    out = cli.out_dir(args, "finetune_size")
    fsets = cli.feature_sets(ds, cfg, args, out)
    n_heldout = min(len(fs.heldout) for fs in fsets.values())
    if max(sizes) > n_heldout:
        print(f"note: M' > {n_heldout} (the held-out set) uses all of it, so GradTune = Random finetune there")
    results = cli.evaluate_heads(fsets, variants(cfg.gradtune, sizes), cli.show_progress(args))
    meta = {"erm": ("erm", "", "")} | {f"{m}@{n}": (m, n, int(0.8 * n)) for n in sizes for m in METHODS}
    labels = {name: LABELS[m] + (f", M'={n}, k={k}" if n else "") for name, (m, n, k) in meta.items()}
    csv_rows, md_rows = cli.summary_rows(results, labels)
    csv_rows = [[ds.name, meta[name][1], meta[name][2], meta[name][0], *stats] for name, *stats in csv_rows]
    md = common.markdown_table(["Method", "Average", "WGA"], md_rows)
    title = (f"# GradTune Fig. 3 on `{ds.name}`: WGA versus fine-tuning set size ({len(fsets)} seeds, test %, "
             f"mean ± std)\n\nCommand: `{cli.command_line(MODULE, argv)}`\n\n![finetune_size](finetune_size.png)\n\n")
    common.atomic_write_text(os.path.join(out, "finetune_size.md"), title + md)
    common.write_csv(os.path.join(out, "finetune_size.csv"), CSV_COLUMNS, csv_rows)
    plot(results, sizes, f"{ds.name}: WGA vs M' ({len(fsets)} seeds)", os.path.join(out, "finetune_size.png"))
    seconds = time.perf_counter() - t0
    cli.write_results(out, "finetune_size", ds, cfg, argv, MODULE, seconds, sizes=sizes, n_heldout=n_heldout,
                      per_seed={name: {str(s): m for s, m in per.items()} for name, per in results.items()})
    print("\n" + md)
    print(f"wrote {out}/finetune_size.md, finetune_size.csv, finetune_size.png, results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
