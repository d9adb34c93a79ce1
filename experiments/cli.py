"""Argument groups and setup shared by the experiment CLIs (table1, the figures and ablations).

Every command takes the same data/model, run, ERM and fine-tuning options; `config_from_args`
turns them into the dataset preset with the overrides applied (`--quick`: tiny embedded data,
tiny model, one seed, few epochs). The per-seed ERM checkpoints and feature cache live under
`--erm-cache` (default `--out`): point several commands at one folder to train ERM once.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Sequence

import numpy as np
from gradtune_jax.progress import progress as progress_bar

from experiments import common
from experiments.configs import ExperimentConfig, get_config, preset_names, scaled_pipeline
from experiments.runner import config_dict
from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.data.digits_celeba import CELEBA_QUICK_COUNTS
from gradtune_jax.data.registry import load_dataset
from gradtune_jax.data.validate import check_classes
from gradtune_jax.errors import UserError
from gradtune_jax.io import ensure_writable_dir
from gradtune_jax.methods.erm import erm_feature_set
from gradtune_jax.methods.features import FeatureSet, evaluate_head
from gradtune_jax.train.recipe import weights_digest
from gradtune_jax.models.registry import backbone_names

# --quick on the embedded digits: 8x8 images, a few hundred examples, a tiny CNN, 1 seed.
QUICK_COUNTS = {"train": (120, 12, 8, 60), "val": (40, 40, 20, 20), "test": (40, 40, 20, 20)}
QUICK_ERM = {"epochs": 2, "batch_size": 32}
QUICK_FT_EPOCHS = 100
QUICK_SIZE = 40  # M' under --quick (the quick held-out set has 60 examples); k = 0.8 M'
# --quick counts of each embedded dataset (with --data-seed; 8x8 images, the tiny CNN)
QUICK_EMBEDDED = {"digits": QUICK_COUNTS, "digits_celeba": CELEBA_QUICK_COUNTS}


def add_data_args(p: common.ArgumentParser) -> None:
    """--dataset, --data-dir, --model, --weights, --image-size, --tokenizer-dir, --data-seed."""
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default="digits", choices=preset_names(),
                   help="dataset preset (default: the embedded Waterbirds-shaped digits, no download)")
    g.add_argument("--data-dir", help="folder with the dataset files (real datasets; see README)")
    g.add_argument("--model", choices=backbone_names(), help="backbone (default: the preset's)")
    g.add_argument("--weights", help="pretrained backbone: torchvision .safetensors/.npz or a HF BERT folder")
    g.add_argument("--image-size", type=common.positive_int, help="image side for image datasets")
    g.add_argument("--tokenizer-dir", help="local tokenizer folder for text datasets (default: --weights)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the embedded dataset (default 0)")


def add_run_args(p: common.ArgumentParser, name: str, erm_cache: bool = True) -> common.ArgumentParser:
    """--seeds, --out, (--erm-cache,) --quick, --no-progress; returns the group for more options."""
    r = p.add_argument_group("run")
    r.add_argument("--seeds", type=common.parse_seeds, default=[0, 1, 2], help="e.g. 0,1,2 or 0-4 (default 0,1,2)")
    r.add_argument("--out", help=f"output folder (default runs/{name}/<dataset>); rerun to resume")
    if erm_cache:
        r.add_argument("--erm-cache", help="folder of the per-seed ERM checkpoints and feature cache (default: --out); "
                                           "give several commands the same folder to train ERM once")
    r.add_argument("--quick", action="store_true",
                   help="smoke test in seconds: tiny embedded data (8x8), tiny CNN, first seed only, "
                        "2 ERM epochs, M'=40, 100 fine-tuning epochs (explicit options still win)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return r


def add_erm_args(p: common.ArgumentParser, default_recipe: str = "gradtune") -> None:
    """The training recipe: `--recipe` (which paper's preset) and per-field overrides. Every model
    the command trains uses it (ERM, retraining baselines, TRAK ensembles, retraining after removal)."""
    from experiments.configs import PAPERS
    from gradtune_jax.train.parallel import MODES
    from gradtune_jax.train.recipe import SAMPLERS

    e = p.add_argument_group(f"training recipe (defaults: the dataset's {default_recipe!r} preset)")
    e.add_argument("--recipe", choices=PAPERS, default=default_recipe,
                   help=f"whose preset: gradtune (GradTune Table 3) or attribution (debiasing paper App. D.2); "
                        f"default {default_recipe}")
    e.add_argument("--optimizer", dest="erm_optimizer", choices=("sgd", "adam", "adamw"))
    e.add_argument("--lr", "--erm-lr", dest="erm_lr", type=common.positive_float, help="learning rate")
    e.add_argument("--wd", "--erm-wd", dest="erm_wd", type=float, help="weight decay")
    e.add_argument("--momentum", dest="erm_momentum", type=float, help="SGD momentum")
    e.add_argument("--schedule", dest="erm_schedule", choices=("constant", "cosine", "linear"))
    e.add_argument("--epochs", "--erm-epochs", dest="erm_epochs", type=common.positive_int)
    e.add_argument("--batch-size", "--erm-batch-size", dest="erm_batch_size", type=common.positive_int)
    e.add_argument("--sampler", dest="erm_sampler", choices=tuple(s for s in SAMPLERS if s != "weighted"))
    e.add_argument("--precision", choices=("fp32", "bf16"), help="compute precision (bf16: mixed, fp32 params)")
    e.add_argument("--parallel", choices=MODES, help="data-parallel mode over the local devices (default jit)")


def add_size_args(p: common.ArgumentParser) -> None:
    """--size (M') and --k (top-k part)."""
    f = p.add_argument_group("fine-tuning set (defaults: M'=500, k=400)")
    f.add_argument("--size", type=common.positive_int, help="fine-tuning set size M'")
    f.add_argument("--k", type=int, help="top-k part of the fine-tuning set (default 0.8 M')")


def add_finetune_args(p: common.ArgumentParser, sampler: bool = True) -> None:
    """Last-layer recipe; `sampler` adds --ft-sampler and --retrain."""
    f = p.add_argument_group("last-layer fine-tuning (defaults: the preset, 500 epochs)")
    f.add_argument("--ft-epochs", type=common.positive_int)
    f.add_argument("--ft-lr", type=common.positive_float)
    f.add_argument("--ft-batch-size", type=common.positive_int)
    f.add_argument("--ft-wd", type=float)
    f.add_argument("--ft-momentum", type=float)
    if sampler:
        f.add_argument("--ft-sampler", choices=("class_balanced", "uniform"), help="class-balanced (default) or plain")
        f.add_argument("--retrain", action="store_true", help="reset the head before last-layer training (Table 5)")


def add_trak_args(p: common.ArgumentParser) -> None:
    """TRAK options, as `experiments.debias_table.trak_config(args)` reads them."""
    from gradtune_jax.methods.debias import WEIGHTINGS

    t = p.add_argument_group("TRAK and alignment (--quick: 32 projections, 1 checkpoint)")
    t.add_argument("--proj-dim", type=int, default=2048, help="projection dimension; 0 = no projection (default 2048)")
    t.add_argument("--lambda-reg", type=float, default=0.0, help="ridge added to X^T X (default 0)")
    t.add_argument("--checkpoints", type=common.positive_int, default=3,
                   help="ERM epochs (evenly spaced, last included) in the TRAK ensemble (default 3)")
    t.add_argument("--trak-params", choices=("all", "head"), default="all", help="parameters TRAK differentiates")
    t.add_argument("--discovery-params", choices=("all", "head"), default="head",
                   help="parameters of the attribution matrix Auto-TRAK splits into pseudo-groups (default head)")
    t.add_argument("--weighting", choices=WEIGHTINGS, default="loss",
                   help="group weight: mean val loss (default, official code) or exp(loss)")
    t.add_argument("--proj-type", choices=("normal", "rademacher", "factorized"), default="normal",
                   help="TRAK projection: dense Gaussian (default), dense Rademacher, or per-layer factorized")
    t.add_argument("--trak-store", metavar="DIR",
                   help="featurise into a resumable on-disk feature store under DIR (gradtune_jax.trak.store)")


def _replace(obj, **kw):
    kw = {k: v for k, v in kw.items() if v is not None}
    return dataclasses.replace(obj, **kw) if kw else obj


def config_from_args(args, paper: str | None = None) -> ExperimentConfig:
    """The dataset preset of `--recipe` (or `paper`) with every given CLI override applied
    (missing options = preset)."""
    opt = lambda name: getattr(args, name, None)  # noqa: E731 - options a command may not define
    quick = bool(opt("quick"))
    for flag, folder in (("--out", opt("out")), ("--erm-cache", opt("erm_cache"))):
        if folder:  # an unwritable output folder fails now, not after the work
            ensure_writable_dir(folder, flag)
    try:
        cfg = get_config(args.dataset, opt("recipe") or paper or "gradtune")
    except ValueError as e:
        raise UserError(str(e)) from None
    rec = cfg.recipe
    changes = dict(QUICK_ERM) if quick else {}
    optim = {k: v for k, v in (("name", opt("erm_optimizer")), ("lr", opt("erm_lr")), ("weight_decay", opt("erm_wd")),
                               ("momentum", opt("erm_momentum")), ("schedule", opt("erm_schedule"))) if v is not None}
    changes.update({k: v for k, v in (("epochs", opt("erm_epochs")), ("batch_size", opt("erm_batch_size")),
                                      ("sampler", opt("erm_sampler")), ("parallel", opt("parallel")),
                                      ("weights", opt("weights"))) if v is not None})
    if opt("precision"):
        changes["mixed_precision"] = opt("precision") == "bf16"
    model = args.model or ("tiny_cnn" if quick and args.dataset in QUICK_EMBEDDED else None)
    if model:
        changes["model"] = model
    if rec.pipeline is not None and opt("image_size"):
        changes["pipeline"] = scaled_pipeline(opt("image_size"))
    if optim:
        changes["optim"] = optim
    if opt("weights"):
        weights_digest(opt("weights"))  # a missing file fails here, before any work
    recipe = rec.replace(**changes)
    retrain = cfg.retrain_recipe.replace(**{k: v for k, v in changes.items() if k != "optim"}) \
        if cfg.retrain_recipe is not None else None
    gt = cfg.gradtune
    size = opt("size") or (QUICK_SIZE if quick else gt.size)
    k = opt("k") if opt("k") is not None else (int(0.8 * size) if size != gt.size else gt.k)
    if not 0 <= k <= size:
        raise UserError(f"--k must be between 0 and the fine-tuning set size {size}, got {k}")
    ft_epochs = opt("ft_epochs") or (QUICK_FT_EPOCHS if quick else None)
    head = _replace(gt.head, epochs=ft_epochs, batch_size=opt("ft_batch_size"), sampler=opt("ft_sampler"),
                    reset=True if opt("retrain") else None,
                    optim=_replace(gt.head.optim, lr=opt("ft_lr"), weight_decay=opt("ft_wd"),
                                   momentum=opt("ft_momentum")))
    kwargs = dict(cfg.dataset_kwargs)
    if args.dataset in QUICK_EMBEDDED:
        kwargs["seed"] = args.data_seed
        if quick:
            kwargs.update(counts=QUICK_EMBEDDED[args.dataset], size=8)
    tokenizer = opt("tokenizer_dir") or (opt("weights") if recipe.model.startswith("bert") else None)
    for key, val in (("data_dir", opt("data_dir")), ("image_size", opt("image_size")), ("tokenizer_dir", tokenizer)):
        if val is not None:
            kwargs[key] = val
    seeds = tuple(args.seeds[:1] if quick else args.seeds)
    if cfg.expects_weights and recipe.weights is None and not quick:
        print(f"note: the {cfg.paper} preset for {args.dataset} starts from pretrained weights; without --weights "
              f"every model trains from a random initialisation")
    return dataclasses.replace(cfg, recipe=recipe, retrain_recipe=retrain,
                               gradtune=dataclasses.replace(gt, size=size, k=k, head=head),
                               seeds=seeds, dataset_kwargs=kwargs)


def out_dir(args, name: str) -> str:
    return ensure_writable_dir(args.out or os.path.join("runs", name, args.dataset), "--out")


def erm_root(args, out: str) -> str:
    return getattr(args, "erm_cache", None) or out


def show_progress(args) -> bool:
    """Progress unless --no-progress: bars on a terminal, one log line per epoch/stage otherwise."""
    return not args.no_progress


def command_line(module: str, argv: Sequence[str] | None) -> str:
    return f"python -m {module} {' '.join(argv if argv is not None else sys.argv[1:])}".strip()


def load(args) -> tuple[ExperimentConfig, GroupDataset]:
    """Config from the arguments and the dataset it names."""
    cfg = config_from_args(args)
    return cfg, check_classes(load_dataset(cfg.dataset, **cfg.dataset_kwargs))


def feature_sets(ds: GroupDataset, cfg: ExperimentConfig, args, out: str) -> dict[int, FeatureSet]:
    """The ERM `FeatureSet` of every seed, trained once and cached under `erm_root(args, out)`."""
    root = erm_root(args, out)
    return {s: erm_feature_set(ds, cfg.recipe, s, root, progress=show_progress(args)).fs for s in cfg.seeds}


def write_results(out: str, experiment: str, ds: GroupDataset, cfg: ExperimentConfig, argv, module: str,
                  seconds: float, **extra) -> None:
    """`out/results.json`: experiment, command, dataset, config, package versions and `extra`."""
    common.atomic_write_json(os.path.join(out, "results.json"), {
        "experiment": experiment, "command": command_line(module, argv), "dataset": ds.name,
        "group_names": ds.names_of_groups(), "config": config_dict(cfg), "recipe": recipe_record(cfg),
        "versions": common.versions(), "seconds": seconds, **extra})


def recipe_record(cfg: ExperimentConfig) -> dict:
    """The run's recipe (and the reweighting baselines' own, when the paper gives one) as JSON,
    with the weights file's SHA-256: what every model of the run was trained with."""
    out = {"paper": cfg.paper, "models": cfg.recipe.describe()}
    if cfg.retrain_recipe is not None:
        out["reweighting_baselines"] = cfg.retrain_recipe.describe()
    return out


HeadFn = Callable[[FeatureSet, int], dict]  # (feature set, seed) -> head


def evaluate_heads(fsets: dict[int, FeatureSet], variants: dict[str, HeadFn], progress: bool) -> dict:
    """`{variant: {seed: test metrics}}` of the head each variant trains on every seed's features."""
    out: dict = {name: {} for name in variants}
    jobs = [(s, name) for s in fsets for name in variants]
    for seed, name in progress_bar(jobs, desc="last-layer runs", enabled=progress):
        out[name][seed] = evaluate_head(variants[name](fsets[seed], seed), fsets[seed].ds.test)
    return out


def summary_rows(results: dict, labels: dict[str, str]) -> tuple[list[list], list[list]]:
    """CSV rows `[name, avg_mean, avg_std, wga_mean, wga_std]` and Markdown rows `[label, avg, wga]`."""
    csv_rows, md_rows = [], []
    for name, label in labels.items():
        runs = list(results[name].values())
        stats = [common.mean_std([100 * r[key] for r in runs]) for key in ("avg", "wga")]
        csv_rows.append([name, *(f"{v:.2f}" for st in stats for v in st)])
        md_rows.append([label, *(common.pm(*st) for st in stats)])
    return csv_rows, md_rows


def np_stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std of a non-empty sequence (NaNs ignored)."""
    v = np.asarray(values, np.float64)
    return float(np.nanmean(v)), float(np.nanstd(v))
