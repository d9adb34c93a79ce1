"""GradTune Table 4 (class-balanced versus class-imbalanced fine-tuning) and Table 5 (fine-tuning
the ERM head versus retraining a reset head), on the same GradTune fine-tuning set.

    python -m experiments.ablations                       # embedded digits, 3 seeds
    python -m experiments.ablations --dataset multinli --data-dir PATH --weights BERT_DIR
    python -m experiments.ablations --quick --out /tmp/ab

Writes `table4.md/csv`, `table5.md/csv` (test %, mean ± std over seeds) and `results.json`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Sequence

from experiments import cli, common
from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.methods.gradtune import GradTuneConfig, gradtune

MODULE = "experiments.ablations"
# variant -> (row label, HeadConfig changes to the preset's class-balanced fine-tuning)
VARIANTS = {
    "erm": ("ERM (no fine-tuning)", None),
    "class_imbalanced": ("GradTune, class-imbalanced fine-tuning (uniform sampler)", {"sampler": "uniform"}),
    "retrain": ("GradTune, last-layer retraining (reset head)", {"reset": True}),
    "class_balanced": ("GradTune, class-balanced fine-tuning (default)", {}),
}
TABLES = {
    "table4": ("Table 4: class-balanced versus class-imbalanced fine-tuning", ("erm", "class_imbalanced", "class_balanced")),
    "table5": ("Table 5: last-layer fine-tuning versus retraining", ("erm", "retrain", "class_balanced")),
}
CSV_COLUMNS = ("dataset", "variant", "avg_mean", "avg_std", "wga_mean", "wga_std")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="GradTune Tables 4 and 5: class-balanced vs class-imbalanced "
                                          "fine-tuning, and fine-tuning vs retraining the last layer.")
    cli.add_data_args(p)
    cli.add_run_args(p, "ablations")
    cli.add_erm_args(p)
    cli.add_size_args(p)
    cli.add_finetune_args(p, sampler=False)
    return p


def _gradtune_head(gcfg: GradTuneConfig, fs: FeatureSet, seed: int) -> dict:
    return gradtune(fs, gcfg, seed)[0]


def variants(gt: GradTuneConfig) -> dict[str, cli.HeadFn]:
    out: dict[str, cli.HeadFn] = {}
    for name, (_, change) in VARIANTS.items():
        if change is None:
            out[name] = lambda fs, seed: fs.head
        else:
            out[name] = functools.partial(_gradtune_head, dataclasses.replace(gt, head=dataclasses.replace(gt.head, **change)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    cfg, ds = cli.load(args)
    out = cli.out_dir(args, "ablations")
    fsets = cli.feature_sets(ds, cfg, args, out)
    results = cli.evaluate_heads(fsets, variants(cfg.gradtune), cli.show_progress(args))
    tables = {}
    for name, (caption, rows) in TABLES.items():
        csv_rows, md_rows = cli.summary_rows(results, {v: VARIANTS[v][0] for v in rows})
        md = common.markdown_table(["Variant", "Average", "WGA"], md_rows)
        tables[name] = md
        common.atomic_write_text(os.path.join(out, f"{name}.md"),
                                 f"# GradTune {caption} on `{ds.name}` ({len(fsets)} seeds, test %, mean ± std, "
                                 f"M'={cfg.gradtune.size}, k={cfg.gradtune.k})\n\n"
                                 f"Command: `{cli.command_line(MODULE, argv)}`\n\n{md}")
        common.write_csv(os.path.join(out, f"{name}.csv"), CSV_COLUMNS, [[ds.name, *r] for r in csv_rows])
    seconds = time.perf_counter() - t0
    cli.write_results(out, "ablations", ds, cfg, argv, MODULE, seconds, tables={k: v[1] for k, v in TABLES.items()},
                      per_seed={name: {str(s): m for s, m in per.items()} for name, per in results.items()})
    for name, md in tables.items():
        print(f"\n{TABLES[name][0]}\n{md}")
    print(f"wrote {out}/table4.md, table4.csv, table5.md, table5.csv, results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
