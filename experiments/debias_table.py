"""Debiasing-by-attribution paper, Table 1/2: balanced accuracy and WGA per method, plus the
WGA-versus-K curve (its Fig. 2).

    python -m experiments.debias_table                 # embedded digits: ERM, TRAK, Auto-TRAK (+ baselines)
    python -m experiments.debias_table --methods erm,trak,auto_trak --seeds 0 --out runs/debias
    python -m experiments.debias_table --quick --out /tmp/q    # seconds: tiny data and model, smoke test

Per seed: the ERM recipe is trained once, its states at `--checkpoints` evenly spaced epochs form
the TRAK ensemble (targets: the whole validation split), group alignment `T` uses validation
groups (TRAK) or Auto-TRAK pseudo-groups (split from a second attribution matrix over
`--discovery-params`, the head by default), every train example with `T < 0` (or the `--k` most
negative) is removed and the model retrained from scratch with the same recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import numpy as np
from gradtune_jax.progress import progress as progress_bar

from experiments import cli, common
from experiments.configs import ExperimentConfig
from gradtune_jax.errors import UserError
from gradtune_jax.io import atomic_save_npz
from gradtune_jax.methods import debias
from gradtune_jax.methods.baselines import group_label_use
from gradtune_jax.methods.erm import erm_key, extract_features
from gradtune_jax.methods.registry import SELECTION_REGIMES, RunContext, get_method, method_names
from gradtune_jax.metrics import evaluate
from gradtune_jax.train.loop import predict
from gradtune_jax.train.recipe import digest

MODULE = "experiments.debias_table"

OWN = {"erm": ("ERM", "no/no"), "auto_trak": ("Auto-TRAK", "no/no"), "trak": ("TRAK", "no/yes")}
# Row order of the paper's table (baselines appear when `methods.baselines` registers them).
PAPER_ORDER = ("erm", "auto_trak", "jtt", "dfr", "trak", "rwg", "subg", "group_dro")
BASELINES = ("jtt", "dfr", "rwg", "subg", "group_dro")
CSV_COLUMNS = ("dataset", "method", "bal_mean", "bal_std", "wga_mean", "wga_std")


def available_methods() -> list[str]:
    known = set(method_names())
    return [m for m in PAPER_ORDER if m in OWN or m in known]


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="Debiasing by data attribution: ERM, TRAK, Auto-TRAK and baselines "
                                          "(balanced accuracy and WGA), plus the WGA-versus-K curve.")
    cli.add_data_args(p)
    r = cli.add_run_args(p, "debias_table", erm_cache=False)
    r.add_argument("--methods", default="all",
                   help=f"comma list or 'all' (default all available: {','.join(available_methods())})")
    r.add_argument("--selection", default="worst-class", choices=SELECTION_REGIMES,
                   help="model selection of the baselines that select (default worst-class: no group labels)")
    cli.add_erm_args(p, default_recipe="attribution")
    cli.add_trak_args(p)
    t = p.add_argument_group("removal")
    t.add_argument("--k", type=common.positive_int, help="remove the K most negative instead of every T < 0")
    t.add_argument("--curve", default="0.5,1.5",
                   help="WGA-vs-K curve on the first seed: multiples of K* = #(T < 0) to retrain at (K capped "
                        "at 90%% of train), or 'none' (default 0.5,1.5; K=0 and K* reuse the ERM and TRAK runs)")
    return p


def trak_config(args) -> debias.TrakConfig:
    proj = 32 if args.quick else (args.proj_dim or None)
    return debias.TrakConfig(proj_dim=proj, lambda_reg=args.lambda_reg,
                             n_checkpoints=1 if args.quick else args.checkpoints,
                             wrt=_params(args.trak_params), discovery_wrt=_params(args.discovery_params),
                             proj_type=getattr(args, "proj_type", "normal"), store=getattr(args, "trak_store", None))


def _params(choice: str) -> str | tuple[str, ...]:
    return "params" if choice == "all" else ("params", "head")


def parse_methods(text: str) -> list[str]:
    avail = available_methods()
    names = avail if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in avail]
    if unknown or not names:
        raise UserError(f"--methods: unknown {unknown or text!r}; expected 'all' or some of {','.join(avail)}")
    return [m for m in PAPER_ORDER if m in names]


def parse_curve(text: str) -> list[float]:
    if text == "none":
        return []
    try:
        mult = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--curve must be 'none' or a comma list of positive numbers, got {text!r}") from None
    if any(m <= 0 for m in mult):
        raise UserError(f"--curve multiples must be positive, got {text!r}")
    return mult


def _metrics(state, ds) -> dict:
    logits, _ = predict(state, ds.test.x)
    return evaluate(logits.argmax(-1), ds.test.y, ds.test.masks())


def minority_groups(ds) -> set[int]:
    """Within each class, the groups smaller than the class's largest group in train."""
    counts = ds.train.group_counts()
    out = set()
    for c in range(ds.n_classes):
        gs = [g for g in range(ds.n_groups) if g // ds.train.n_attrs == c]
        top = max(counts[g] for g in gs)
        out |= {g for g in gs if counts[g] < top}
    return out


def run_key(ds, cfg: ExperimentConfig, tcfg: debias.TrakConfig, args, methods: list[str], curve: list[float]) -> str:
    """What a saved seed result depends on (dataset, recipes, code versions, TRAK, removal and
    selection settings, rows); it names the folder of the saved results."""
    retrain = cfg.retrain_recipe.fingerprint() if cfg.retrain_recipe is not None else None
    return digest({**erm_key(ds, cfg.recipe), "retrain": retrain, "trak": repr(tcfg), "weighting": args.weighting,
                   "k": args.k, "selection": args.selection, "methods": methods, "curve": curve,
                   "seeds0": cfg.seeds[0], "gradtune": repr(cfg.gradtune)})


def run_seed(ds, cfg: ExperimentConfig, tcfg: debias.TrakConfig, seed: int, methods: list[str], args,
             out: str, curve: list[float], progress: bool) -> dict:
    """All rows for one seed, saved in `out/debias-<key>/seed{seed}.json` (reused when present;
    stale folders of other configurations are left alone)."""
    key = run_key(ds, cfg, tcfg, args, methods, curve)
    path = os.path.join(out, f"debias-{key}", f"seed{seed}.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        print(f"seed {seed}: reusing {path}")
        return {**saved, "reused": True}
    epochs = debias.checkpoint_epochs(cfg.recipe.epochs, tcfg.n_checkpoints)
    partial = path.replace(".json", ".partial.json")
    res: dict = {"key": key, "methods": methods, "curve": curve, "checkpoint_epochs": epochs, "rows": {},
                 "recipe": cfg.recipe.describe()}
    if os.path.exists(partial):  # a killed run: keep every finished row
        with open(partial) as f:
            res = json.load(f)
        print(f"seed {seed}: resuming from {partial} (rows done: {', '.join(res['rows'])})")
    cache: dict = {}

    def states():  # the ERM ensemble, trained only when a unit still needs it
        if "states" not in cache:
            cache["states"] = debias.train_with_checkpoints(ds, cfg.recipe, seed, epochs, progress=progress)
        return cache["states"]

    if "erm" not in res["rows"]:
        res["rows"]["erm"] = {"metrics": _metrics(states()[-1], ds), "n_train": len(ds.train)}
        _log_row(path, res, seed, "erm")
    needs_trak = {"trak", "auto_trak"} & set(methods) or curve
    if needs_trak:
        scores_path = path.replace(".json", ".trak.npz")
        if os.path.exists(scores_path):
            z = np.load(scores_path)
            tau_NV, loss_V = z["tau"], z["loss_V"]
            tau_disc = z["tau_disc"] if "tau_disc" in z.files else None
        else:
            t0 = time.perf_counter()
            res["trak_kernel"] = {}
            tau_NV = debias.val_attribution(states(), ds.train, ds.val, tcfg, seed, progress=progress,
                                            info=res["trak_kernel"])
            res["trak_seconds"] = time.perf_counter() - t0
            loss_V = debias.val_losses(states()[-1], ds.val)
            tau_disc = None
            if "auto_trak" in methods:
                t0 = time.perf_counter()
                res["discovery_kernel"] = {}
                tau_disc = debias.discovery_attribution(states(), ds.train, ds.val, tcfg, seed, tau_NV,
                                                        progress=progress, info=res["discovery_kernel"])
                res["discovery_seconds"] = time.perf_counter() - t0
            atomic_save_npz(scores_path, tau=np.asarray(tau_NV, np.float32), loss_V=loss_V,
                            **({} if tau_disc is None else {"tau_disc": np.asarray(tau_disc, np.float32)}))
            common.atomic_write_json(partial, res)
        groups = {"trak": ds.val.g}
        if "auto_trak" in methods:
            pseudo, info = debias.auto_trak_groups(tau_disc, ds.val.y)
            groups["auto_trak"] = pseudo
            res["auto_trak_groups"] = {**info, **debias.group_agreement(pseudo, ds.val.g, ds.val.y, loss_V,
                                                                        minority_groups(ds))}
        for name in [m for m in ("trak", "auto_trak") if m in groups and (m in methods or m == "trak")]:
            t_N = debias.alignment_scores(tau_NV, groups[name], loss_V, args.weighting)
            if name == "trak":
                t_trak = t_N
            if name in res["rows"]:
                continue
            keep = debias.removal_mask(t_N, args.k, ds.train.y)
            removed_g = np.bincount(ds.train.g[~keep], minlength=ds.n_groups).tolist()
            row = {"n_removed": int((~keep).sum()), "removed_per_group": removed_g, "n_neg": int((t_N < 0).sum())}
            if name in methods:
                st = debias.retrain_on(ds, cfg.recipe, seed, keep, desc=f"{OWN[name][0]} seed {seed}",
                                       progress=progress)
                row["metrics"] = _metrics(st, ds)
            res["rows"][name] = row
            _log_row(path, res, seed, name)
        if curve and seed == cfg.seeds[0] and "curve_points" not in res:
            res["curve_points"] = _curve(ds, cfg, seed, t_trak, res, curve, progress)
            common.atomic_write_json(partial, res)
    baselines = [m for m in methods if m in BASELINES and m not in res["rows"]]
    if baselines:
        fs = extract_features(states()[-1], ds, seed, cfg.recipe.eval_batch_size, progress=progress)
        for name in baselines:
            method = get_method(name)
            sel = args.selection if args.selection in method.selections else method.selections[0]
            ctx = RunContext(ds=ds, fs=fs, seed=seed, workdir=os.path.join(out, f"seed{seed}", name),
                             recipe=cfg.recipe, retrain_recipe=cfg.retrain_recipe,
                             hparams={"gradtune": cfg.gradtune}, selection=sel, progress=progress)
            mo = method.run(ctx)
            res["rows"][name] = {"metrics": evaluate(mo.pred_test, ds.test.y, ds.test.masks()),
                                 "selection": mo.selection, "recipe": mo.info.get("recipe")}
            _log_row(path, res, seed, name)
    common.atomic_write_json(path, res)
    return res


def _log_row(path: str, res: dict, seed: int, name: str) -> None:
    """Print one finished row and save the seed's partial results next to `path`."""
    row = res["rows"][name]
    if "metrics" in row:
        m = row["metrics"]
        print(f"seed {seed} {name:<10} bal {100 * m['bal_acc']:.1f}  wga {100 * m['wga']:.1f}"
              + (f"  removed {row['n_removed']}" if "n_removed" in row else ""), flush=True)
    common.atomic_write_json(path.replace(".json", ".partial.json"), res)


def _curve(ds, cfg, seed, t_N, res, mults, progress) -> list[dict]:
    """(K, WGA, balanced accuracy) for K = 0, K*, and `mults` x K* (K* = #(T < 0))."""
    k_star = int((t_N < 0).sum())
    pts = [{"k": 0, **_short(res["rows"]["erm"]["metrics"])}]
    if "metrics" in res["rows"]["trak"]:
        pts.append({"k": k_star, "heuristic": True, **_short(res["rows"]["trak"]["metrics"])})
    for m in mults:
        k = min(int(round(m * k_star)), int(0.9 * len(t_N)))
        if k <= 0 or any(p["k"] == k for p in pts):
            continue
        keep = debias.removal_mask(t_N, k, ds.train.y)
        st = debias.retrain_on(ds, cfg.recipe, seed, keep, desc=f"curve K={k}", progress=progress)
        pts.append({"k": k, **_short(_metrics(st, ds))})
        print(f"seed {seed} curve K={k}: wga {100 * pts[-1]['wga']:.1f}  bal {100 * pts[-1]['bal_acc']:.1f}", flush=True)
    return sorted(pts, key=lambda p: p["k"])


def _short(m: dict) -> dict:
    return {"wga": m["wga"], "bal_acc": m["bal_acc"], "avg": m["avg"]}


def plot_curve(points: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradtune_jax.io import atomic_open

    k = [p["k"] for p in points]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(k, [100 * p["wga"] for p in points], "o-", label="worst-group acc")
    ax.plot(k, [100 * p["bal_acc"] for p in points], "s--", label="balanced acc")
    for p in points:
        if p.get("heuristic"):
            ax.plot([p["k"]], [100 * p["wga"]], "*", color="green", markersize=16, label="T < 0 heuristic")
    ax.set_xlabel("training examples removed (most negative T first)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def summarise(per_seed: dict, dataset: str, methods: list[str]) -> tuple[list, list, str]:
    csv_rows, summary, md_rows = [], [], []
    for name in methods:
        runs = [r["rows"][name] for r in per_seed.values() if "metrics" in r["rows"].get(name, {})]
        if not runs:
            continue
        bal = common.mean_std([100 * r["metrics"]["bal_acc"] for r in runs])
        wga = common.mean_std([100 * r["metrics"]["wga"] for r in runs])
        if name in OWN:
            (label, groups), sel = OWN[name], "fixed"
        else:  # what the runs read, from the regime that actually selected (as in table1)
            label = get_method(name).label
            sel = ", ".join(sorted({r.get("selection", "?") for r in runs}))
            groups = ", ".join(sorted({group_label_use(name, r.get("selection", "oracle")) for r in runs}))
        csv_rows.append([dataset, name, *(f"{v:.2f}" for v in (*bal, *wga))])
        summary.append({"method": name, "label": label, "group_labels": groups, "selection": sel,
                        "bal_mean": bal[0], "bal_std": bal[1], "wga_mean": wga[0], "wga_std": wga[1]})
        md_rows.append([label, groups, sel, common.pm(*bal), common.pm(*wga)])
    return csv_rows, summary, common.markdown_table(
        ["Method", "Group labels train/val", "Selection", "Balanced acc", "WGA"], md_rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = parse_methods(args.methods)
    curve = parse_curve(args.curve)
    cfg, ds = cli.load(args)
    tcfg = trak_config(args)
    out = cli.out_dir(args, "debias_table")
    progress = cli.show_progress(args)
    t0 = time.perf_counter()
    print(f"{ds.name}: per-split group counts\n{ds.count_table()}")
    per_seed = {}
    for seed in progress_bar(cfg.seeds, desc="seeds", unit="seed", enabled=progress and len(cfg.seeds) > 1):
        r = run_seed(ds, cfg, tcfg, seed, methods, args, out, curve, progress)
        per_seed[str(seed)] = r
        if "auto_trak_groups" in r:
            a = r["auto_trak_groups"]
            print(f"seed {seed} Auto-TRAK groups vs true: ARI {a['ari']:.3f}  minority recall {a['minority_recall']:.3f}")
    csv_rows, summary, md = summarise(per_seed, ds.name, methods)
    auto = [r["auto_trak_groups"] for r in per_seed.values() if "auto_trak_groups" in r]
    agreement = {k: common.mean_std([a[k] for a in auto]) for k in ("ari", "minority_recall")} if auto else {}
    first = per_seed[str(cfg.seeds[0])]
    if first.get("curve_points"):
        plot_curve(first["curve_points"], os.path.join(out, "wga_vs_k.png"),
                   f"{ds.name}, seed {cfg.seeds[0]}: removing negative-alignment examples")
    seconds = time.perf_counter() - t0
    title = (f"# Debiasing by data attribution on `{ds.name}` ({len(cfg.seeds)} seeds, test accuracy %, "
             f"mean ± std)\n\nCommand: `{cli.command_line(MODULE, argv)}`\n\n")
    note = ""
    if agreement:
        note = (f"\nAuto-TRAK pseudo-groups vs true validation groups: ARI {agreement['ari'][0]:.3f} ± "
                f"{agreement['ari'][1]:.3f}, minority recall {agreement['minority_recall'][0]:.3f} ± "
                f"{agreement['minority_recall'][1]:.3f}\n")
    common.atomic_write_text(os.path.join(out, "debias_table.md"), title + md + note)
    common.write_csv(os.path.join(out, "debias_table.csv"), CSV_COLUMNS, csv_rows)
    cli.write_results(out, "debias_table", ds, cfg, argv, MODULE, seconds, trak=dataclasses.asdict(tcfg),
                      weighting=args.weighting, k=args.k, methods=methods, selection_requested=args.selection,
                      group_label_regime={s["method"]: s["group_labels"] for s in summary},
                      auto_trak_agreement=agreement, summary=summary, per_seed=per_seed)
    print("\n" + md + note)
    print(f"wrote {out}/debias_table.md, debias_table.csv, results.json"
          + (", wga_vs_k.png" if first.get("curve_points") else "") + f" ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
