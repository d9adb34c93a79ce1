"""GradTune paper, Table 1: Average and WGA (mean ± std over seeds) per method.

    python -m experiments.table1                      # embedded digits, 3 seeds, ERM/Random/GradTune
    python -m experiments.table1 --dataset waterbirds --data-dir PATH --model resnet50 --weights W
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Sequence

from experiments import common
from experiments.configs import ExperimentConfig, get_config, preset_names
from experiments.runner import config_dict, pretrained_init, run_methods
from gradtune_jax.data.registry import load_dataset
from gradtune_jax.errors import UserError
from gradtune_jax.methods.registry import SELECTION_REGIMES, get_method, method_names
from gradtune_jax.models.registry import backbone_names

DEFAULT_METHODS = ("erm", "random_finetune", "gradtune")
CSV_COLUMNS = ("dataset", "method", "avg_mean", "avg_std", "wga_mean", "wga_std")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog="python -m experiments.table1",
        description="GradTune Table 1: ERM, Random finetune, GradTune (and baselines) - Average and WGA.")
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default="digits", choices=preset_names(),
                   help="dataset preset (default: the embedded Waterbirds-shaped digits, no download)")
    g.add_argument("--data-dir", help="folder with the dataset files (real datasets; see README)")
    g.add_argument("--model", choices=backbone_names(), help="backbone (default: the preset's)")
    g.add_argument("--weights", help="pretrained backbone: torchvision .safetensors/.npz or a HF BERT folder")
    g.add_argument("--image-size", type=common.positive_int, help="image side for image datasets")
    g.add_argument("--tokenizer-dir", help="local tokenizer folder for text datasets (default: --weights)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the embedded dataset (default 0)")
    r = p.add_argument_group("run")
    r.add_argument("--seeds", type=common.parse_seeds, default=[0, 1, 2], help="e.g. 0,1,2 or 0-4 (default 0,1,2)")
    r.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list or 'all' (default {','.join(DEFAULT_METHODS)}); known: {','.join(method_names())}")
    r.add_argument("--selection", default="worst-class", choices=SELECTION_REGIMES,
                   help="model selection for methods that search hyperparameters (default worst-class: no group labels)")
    r.add_argument("--out", help="output folder (default runs/table1/<dataset>); rerun to resume")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e = p.add_argument_group("ERM recipe (defaults: the dataset preset)")
    e.add_argument("--erm-epochs", type=common.positive_int)
    e.add_argument("--erm-lr", type=common.positive_float)
    e.add_argument("--erm-batch-size", type=common.positive_int)
    e.add_argument("--erm-wd", type=float)
    f = p.add_argument_group("GradTune / last-layer fine-tuning (defaults: M'=500, k=400, 500 epochs)")
    f.add_argument("--size", type=common.positive_int, help="fine-tuning set size M'")
    f.add_argument("--k", type=int, help="top-k part of the fine-tuning set (default 0.8 M')")
    f.add_argument("--ft-epochs", type=common.positive_int)
    f.add_argument("--ft-lr", type=common.positive_float)
    f.add_argument("--ft-batch-size", type=common.positive_int)
    f.add_argument("--ft-wd", type=float)
    f.add_argument("--ft-momentum", type=float)
    f.add_argument("--ft-sampler", choices=("class_balanced", "uniform"), help="class-balanced (default) or plain")
    f.add_argument("--retrain", action="store_true", help="reset the head before last-layer training (Table 5)")
    return p


def _replace(obj, **kw):
    kw = {k: v for k, v in kw.items() if v is not None}
    return dataclasses.replace(obj, **kw) if kw else obj


def config_from_args(args) -> ExperimentConfig:
    """The dataset preset with every given CLI override applied."""
    cfg = get_config(args.dataset)
    fit = cfg.erm.fit
    fit = _replace(fit, epochs=args.erm_epochs, batch_size=args.erm_batch_size,
                   optim=_replace(fit.optim, lr=args.erm_lr, weight_decay=args.erm_wd))
    erm = _replace(cfg.erm, model=args.model, fit=fit)
    gt = cfg.gradtune
    size = args.size or gt.size
    k = args.k if args.k is not None else (int(0.8 * size) if args.size else gt.k)
    if not 0 <= k <= size:
        raise UserError(f"--k must be between 0 and the fine-tuning set size {size}, got {k}")
    head = _replace(gt.head, epochs=args.ft_epochs, batch_size=args.ft_batch_size, sampler=args.ft_sampler,
                    reset=True if args.retrain else None,
                    optim=_replace(gt.head.optim, lr=args.ft_lr, weight_decay=args.ft_wd, momentum=args.ft_momentum))
    kwargs = dict(cfg.dataset_kwargs)
    if args.dataset == "digits":
        kwargs["seed"] = args.data_seed
    for key, val in (("data_dir", args.data_dir), ("image_size", args.image_size),
                     ("tokenizer_dir", args.tokenizer_dir or (args.weights if erm.model.startswith("bert") else None))):
        if val is not None:
            kwargs[key] = val
    return dataclasses.replace(cfg, erm=erm, gradtune=dataclasses.replace(gt, size=size, k=k, head=head),
                               seeds=tuple(args.seeds), dataset_kwargs=kwargs)


def parse_methods(text: str) -> list[str]:
    names = method_names() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
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
        csv_rows.append([dataset, name, *(f"{v:.2f}" for v in (*stat["avg"], *stat["wga"]))])
        summary.append({"method": name, "label": m.label, "group_labels": m.group_labels, "selection": sel,
                        **{f"{k}_{s}": v for k, (mu, sd) in stat.items() for s, v in (("mean", mu), ("std", sd))}})
        row = [m.label, m.group_labels, "/".join(sel), common.pm(*stat["avg"])]
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
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = args.out or os.path.join("runs", "table1", args.dataset)
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, **cfg.dataset_kwargs)
    init_fn = pretrained_init(cfg.erm.model, args.weights, ds.n_classes)
    results = run_methods(ds, cfg, methods, cfg.seeds, out, hparams={"gradtune": cfg.gradtune},
                          selection=args.selection, progress=progress, init_variables_fn=init_fn)
    csv_rows, summary, md = summarise(results, ds.name, cfg.waterbirds_like)
    seconds = time.perf_counter() - t0
    title = (f"# GradTune Table 1 on `{ds.name}` ({len(cfg.seeds)} seeds, test accuracy %, mean ± std)\n\n"
             f"Command: `python -m experiments.table1 {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
    common.atomic_write_text(os.path.join(out, "table1.md"), title + md)
    common.write_csv(os.path.join(out, "table1.csv"), CSV_COLUMNS, csv_rows)
    common.atomic_write_json(os.path.join(out, "results.json"), {
        "experiment": "table1", "dataset": ds.name, "group_names": ds.names_of_groups(),
        "config": config_dict(cfg), "methods": methods, "selection_requested": args.selection,
        "group_label_regime": {s["method"]: {"group_labels_train_val": s["group_labels"],
                                             "selection": s["selection"]} for s in summary},
        "versions": common.versions(), "seconds": seconds, "summary": summary,
        "per_seed": {m: {str(s): r for s, r in per.items()} for m, per in results.items()}})
    print("\n" + md)
    print(f"wrote {out}/table1.md, table1.csv, results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
