"""GradTune paper, Table 1: Average and WGA (mean ± std over seeds) per method.

    python -m experiments.table1                      # embedded digits, 3 seeds, ERM/Random/GradTune
    python -m experiments.table1 --dataset waterbirds --data-dir PATH --model resnet50 --weights W
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from experiments import cli, common
from experiments.runner import config_dict, run_methods
from gradtune_jax.data.registry import load_dataset
from gradtune_jax.data.validate import check_classes
from gradtune_jax.errors import UserError
from gradtune_jax.methods.baselines import PAPER_ORDER, group_label_use, paper_selection
from gradtune_jax.methods.registry import SELECTION_REGIMES, get_method, method_names

DEFAULT_METHODS = ("erm", "random_finetune", "gradtune")
CSV_COLUMNS = ("dataset", "method", "avg_mean", "avg_std", "wga_mean", "wga_std")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog="python -m experiments.table1",
        description="GradTune Table 1: ERM, Random finetune, GradTune (and baselines) - Average and WGA.")
    cli.add_data_args(p)
    r = cli.add_run_args(p, "table1")
    r.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list or 'all' (default {','.join(DEFAULT_METHODS)}); known: {','.join(method_names())}")
    r.add_argument("--selection", default="worst-class", choices=(*SELECTION_REGIMES, "paper"),
                   help="model selection for methods that search hyperparameters (default worst-class: no group "
                        "labels; 'paper': each method's regime in its paper, oracle for the val-group rows)")
    cli.add_erm_args(p)
    cli.add_size_args(p)
    cli.add_finetune_args(p)
    return p


def parse_methods(text: str) -> list[str]:
    """Method names from `--methods`; `all` lists them in the paper's row order."""
    if text == "all":
        known = method_names()
        return [m for m in PAPER_ORDER if m in known] + [m for m in known if m not in PAPER_ORDER]
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in method_names()]
    if unknown or not names:
        raise UserError(f"--methods: unknown {unknown or text!r}; expected 'all' or some of {','.join(method_names())}")
    return names


def summarise(results: dict, dataset: str, waterbirds_like: bool) -> tuple[list, list, str]:
    """CSV rows, JSON-ready summary rows, and the Markdown table."""
    csv_rows, summary, md_rows = [], [], []
    for name, per_seed in results.items():
        m = get_method(name)
        stat = {k: common.mean_std([100 * r["metrics"][k] for r in per_seed.values()])
                for k in ("avg", "wga", "wavg") if all(k in r["metrics"] for r in per_seed.values())}
        sel = sorted({r["selection"] for r in per_seed.values()})
        labels = ", ".join(sorted({group_label_use(name, r["selection"]) for r in per_seed.values()}))
        csv_rows.append([dataset, name, *(f"{v:.2f}" for v in (*stat["avg"], *stat["wga"]))])
        summary.append({"method": name, "label": m.label, "group_labels": labels, "selection": sel,
                        **{f"{k}_{s}": v for k, (mu, sd) in stat.items() for s, v in (("mean", mu), ("std", sd))}})
        row = [m.label, labels, ", ".join(sel), common.pm(*stat["avg"])]
        if waterbirds_like and "wavg" in stat:
            row.append(common.pm(*stat["wavg"]))
        row.append(common.pm(*stat["wga"]))
        md_rows.append(row)
    header = ["Method", "Group labels train/val", "Selection", "Average"]
    if waterbirds_like:
        header.append("Weighted avg")
    header.append("WGA")
    return csv_rows, summary, common.markdown_table(header, md_rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = parse_methods(args.methods)
    cfg = cli.config_from_args(args)
    out = cli.out_dir(args, "table1")
    progress = cli.show_progress(args)
    t0 = time.perf_counter()
    ds = check_classes(load_dataset(cfg.dataset, **cfg.dataset_kwargs))
    regimes = {m: paper_selection(m) if args.selection == "paper" else args.selection for m in methods}
    results: dict = {}
    for regime in dict.fromkeys(regimes.values()):  # one pass per regime; the ERM cache is shared
        results.update(run_methods(ds, cfg, [m for m in methods if regimes[m] == regime], cfg.seeds,
                                   cli.erm_root(args, out), hparams={"gradtune": cfg.gradtune}, selection=regime,
                                   progress=progress))
    results = {m: results[m] for m in methods}
    csv_rows, summary, md = summarise(results, ds.name, cfg.waterbirds_like)
    seconds = time.perf_counter() - t0
    title = (f"# GradTune Table 1 on `{ds.name}` ({len(cfg.seeds)} seeds, test accuracy %, mean ± std)\n\n"
             f"Command: `{cli.command_line('experiments.table1', argv)}`\n\n")
    common.atomic_write_text(os.path.join(out, "table1.md"), title + md)
    common.write_csv(os.path.join(out, "table1.csv"), CSV_COLUMNS, csv_rows)
    common.atomic_write_json(os.path.join(out, "results.json"), {
        "experiment": "table1", "dataset": ds.name, "group_names": ds.names_of_groups(),
        "config": config_dict(cfg), "recipe": cli.recipe_record(cfg), "methods": methods,
        "selection_requested": args.selection,
        "group_label_regime": {s["method"]: {"group_labels_train_val": s["group_labels"],
                                             "selection": s["selection"]} for s in summary},
        "versions": common.versions(), "seconds": seconds, "summary": summary,
        "per_seed": {m: {str(s): r for s, r in per.items()} for m, per in results.items()}})
    print("\n" + md)
    print(f"wrote {out}/table1.md, table1.csv, results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
