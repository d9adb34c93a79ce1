"""Debiasing-by-attribution figures on one seed (the first of --seeds; ERM is trained here with
its TRAK checkpoints, so the GradTune feature cache does not apply):

- Fig. 2: worst-group and balanced test accuracy versus the number K of removed training
  examples (most negative group alignment T first, retrained from scratch with the ERM recipe),
  the `T < 0` heuristic starred, against removing K random examples and group balancing
  (keeping `min_g count(g)` examples of every train group: uses train group labels).
- Appendix F: mean alignment score per training subpopulation (class x spurious attribute, plus
  any extra per-example columns in `ds.info["train_attributes"]` = `{name: (n_train,) ints}`),
  and the most negative training examples as an image grid (image datasets).
- Auto-TRAK bias discovery: per class, the training examples at both extremes of the top
  principal component of the (row-normalised) TRAK matrix of that class's validation examples,
  as an image grid, with the spurious-attribute make-up of each extreme.

    python -m experiments.attribution                    # embedded digits
    python -m experiments.attribution --dataset celeba_age --data-dir PATH
    python -m experiments.attribution --quick --out /tmp/at

TRAK, alignment, removal and retraining are `gradtune_jax.methods.debias` (as in
`experiments.debias_table`, which makes the Table 1/2 rows); TRAK scores are cached in
`--out/attribution-<key>/seed{s}/trak.npz` (keyed by dataset, recipe, code versions and TRAK
settings) and every retrained point in `curve.json` beside it, so reruns resume.
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

from experiments import cli, common, plots
from experiments.debias_table import minority_groups, trak_config
from gradtune_jax.data.dataset import GroupDataset, take
from gradtune_jax.errors import UserError
from gradtune_jax.io import atomic_save_npz
from gradtune_jax.methods import debias
from gradtune_jax.methods.erm import erm_key
from gradtune_jax.methods.reweight import subg_indices
from gradtune_jax.metrics import evaluate
from gradtune_jax.train.loop import predict
from gradtune_jax.train.recipe import digest

MODULE = "experiments.attribution"
CURVE_COLUMNS = ("dataset", "seed", "removal", "k", "wga", "bal_acc", "avg")
SUBPOP_COLUMNS = ("dataset", "class", "column", "value", "n", "mean_alignment", "frac_negative")
N_SHOW = 8  # images per grid row


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="Debiasing-by-attribution Fig. 2 (WGA vs removed examples), appendix F "
                                          "(alignment per subpopulation) and the Auto-TRAK bias discovery report.")
    cli.add_data_args(p)
    r = cli.add_run_args(p, "attribution", erm_cache=False)
    r.add_argument("--curve", default="0.5,1,2",
                   help="K values as multiples of K* = #(T < 0) (default 0.5,1,2; K=0 is the ERM model)")
    r.add_argument("--no-random", action="store_true", help="skip the random-removal baseline curve")
    cli.add_erm_args(p, default_recipe="attribution")
    cli.add_trak_args(p)
    return p


def parse_curve(text: str) -> list[float]:
    try:
        mult = sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        mult = []
    if not mult or min(mult) <= 0:
        raise UserError(f"--curve must be a comma list of positive numbers, got {text!r}")
    return mult


def eval_test(state, ds: GroupDataset) -> dict:
    logits, _ = predict(state, ds.test.x)
    m = evaluate(np.asarray(logits).argmax(-1), ds.test.y, ds.test.masks())
    return {k: m[k] for k in ("wga", "bal_acc", "avg", "group_acc")}


def run_folder(ds: GroupDataset, cfg, tcfg: debias.TrakConfig, seed: int, out: str) -> str:
    """`out/attribution-<key>/seed{seed}`: keyed by dataset, recipe, code versions and TRAK settings."""
    key = digest({**erm_key(ds, cfg.recipe), "trak": repr(tcfg)})
    return os.path.join(out, f"attribution-{key}", f"seed{seed}")


def trak_scores(ds: GroupDataset, cfg, tcfg: debias.TrakConfig, seed: int, folder: str, progress: bool) -> dict:
    """`tau (n_train, n_val)`, Auto-TRAK's matrix `tau_disc` (w.r.t. `tcfg.discovery_wrt`), validation
    losses and the ERM test metrics, cached in `folder/trak.npz`."""
    path = os.path.join(folder, "trak.npz")
    if os.path.exists(path):
        z = np.load(path)
        print(f"seed {seed}: reusing TRAK scores {path}")
        return {"tau": z["tau"], "tau_disc": z["tau_disc"], "loss_V": z["loss_V"], "erm": json.loads(str(z["erm"])),
                "kernels": json.loads(str(z["kernels"])) if "kernels" in z else None}
    epochs = debias.checkpoint_epochs(cfg.recipe.epochs, tcfg.n_checkpoints)
    states = debias.train_with_checkpoints(ds, cfg.recipe, seed, epochs, progress=progress)
    kernels = {"trak": {}, "discovery": {}}  # the rank-safe kernel's report (rank, condition number, method)
    tau = debias.val_attribution(states, ds.train, ds.val, tcfg, seed, progress=progress, info=kernels["trak"])
    tau_disc = debias.discovery_attribution(states, ds.train, ds.val, tcfg, seed, tau, progress=progress,
                                            info=kernels["discovery"])
    loss_V = debias.val_losses(states[-1], ds.val)
    erm = eval_test(states[-1], ds)
    atomic_save_npz(path, tau=np.asarray(tau, np.float32), tau_disc=np.asarray(tau_disc, np.float32), loss_V=loss_V,
                    erm=np.array(json.dumps(erm)), kernels=np.array(json.dumps(kernels)))
    return {"tau": tau, "tau_disc": tau_disc, "loss_V": loss_V, "erm": erm, "kernels": kernels}


def removal_sets(ds: GroupDataset, t_N: np.ndarray, mults: Sequence[float], seed: int,
                 random: bool) -> dict[str, np.ndarray]:
    """`{"{removal}@{K}": keep mask}` for TRAK removal at K = mult x K* (and K*; K values that
    would leave fewer examples than classes are skipped), random removal at the same K, and group
    balancing."""
    n, y = len(t_N), ds.train.y
    k_star = int((t_N < 0).sum())
    ks = sorted(k for k in {int(round(m * k_star)) for m in (*mults, 1.0)} if 0 < k <= n - ds.n_classes)
    sets = {f"trak@{k}": debias.removal_mask(t_N, k, y) for k in ks}
    if random:
        rng = np.random.default_rng([seed, 11])
        for k in ks:
            keep = np.ones(n, bool)
            keep[rng.permutation(n)[:k]] = False
            sets[f"random@{k}"] = keep
    keep = np.zeros(n, bool)
    keep[subg_indices(ds.train.g, seed)] = True
    sets[f"balance@{int((~keep).sum())}"] = keep
    return sets


def removal_curve(ds: GroupDataset, cfg, seed: int, sets: dict[str, np.ndarray], erm: dict, folder: str,
                  progress: bool) -> dict[str, dict]:
    """Test metrics after retraining on each kept set (resumed point by point from
    `folder/curve.json`; the folder is keyed by everything the points depend on)."""
    path = os.path.join(folder, "curve.json")
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            done = json.load(f)["points"]
    points = {"trak@0": erm}
    for name in progress_bar(sets, desc="retraining after removal", enabled=progress):
        if name not in done:
            st = debias.retrain_on(ds, cfg.recipe, seed, sets[name], desc=f"retrain {name}", progress=progress)
            done[name] = eval_test(st, ds)
            common.atomic_write_json(path, {"points": done})
        points[name] = done[name]
    return points


def curve_table(points: dict[str, dict], k_star: int, dataset: str, seed: int) -> tuple[list, str]:
    labels = {"trak": "TRAK (most negative T first)", "random": "random removal", "balance": "group balancing"}
    rows = sorted((name.split("@")[0], int(name.split("@")[1]), m) for name, m in points.items())
    csv_rows = [[dataset, seed, r, k, f"{100 * m['wga']:.2f}", f"{100 * m['bal_acc']:.2f}", f"{100 * m['avg']:.2f}"]
                for r, k, m in rows]
    md_rows = [[labels[r] + (" (T < 0 heuristic)" if r == "trak" and k == k_star else ""), k,
                f"{100 * m['wga']:.1f}", f"{100 * m['bal_acc']:.1f}"] for r, k, m in rows]
    return csv_rows, common.markdown_table(["Removal", "K removed", "WGA", "Balanced acc"], md_rows)


def plot_curve(points: dict[str, dict], k_star: int, title: str, path: str) -> None:
    fig, axes = plots.subplots(2, size=(4.4, 3.6))
    for ax, metric, name in zip(axes, ("wga", "bal_acc"), ("worst-group", "balanced")):
        for removal, style, label in (("trak", "o-", "TRAK removal"), ("random", "s--", "random removal")):
            pts = sorted((int(k), 100 * m[metric]) for n, m in points.items() for r, k in [n.split("@")]
                         if r == removal or (r == "trak" and k == "0"))
            if len(pts) > 1:
                ax.plot(*zip(*pts), style, label=label)
        star = points.get(f"trak@{k_star}")
        if star:
            ax.plot([k_star], [100 * star[metric]], "*", color="green", markersize=15, label="T < 0 heuristic")
        for n, m in points.items():
            if n.startswith("balance@"):
                ax.plot([int(n.split("@")[1])], [100 * m[metric]], "D", color="black", label="group balancing")
        ax.set_xlabel("training examples removed")
        ax.set_ylabel(f"test {name} accuracy (%)")
        ax.set_title(title, fontsize=8)
    axes[0].legend(fontsize=7)
    plots.save(fig, path)


def attribute_columns(ds: GroupDataset) -> dict[str, tuple[np.ndarray, Sequence[str] | None]]:
    """Per-example train columns: the spurious attribute and any `ds.info["train_attributes"]`."""
    cols = {"attribute": (ds.train.a, list(ds.attr_names))}
    for name, values in (ds.info.get("train_attributes") or {}).items():
        cols[name] = (np.asarray(values), None)
    return cols


def subpopulations(ds: GroupDataset, t_N: np.ndarray) -> list[dict]:
    """Mean alignment score and fraction with T < 0 per (class, column, value), most negative first."""
    rows = []
    for col, (values, names) in attribute_columns(ds).items():
        for c in range(ds.n_classes):
            for v in np.unique(values):
                sel = (ds.train.y == c) & (values == v)
                if sel.any():
                    rows.append({"class": str(ds.class_names[c]), "column": col,
                                 "value": str(names[int(v)]) if names else str(v), "n": int(sel.sum()),
                                 "mean_alignment": float(t_N[sel].mean()), "frac_negative": float((t_N[sel] < 0).mean())})
    return sorted(rows, key=lambda r: r["mean_alignment"])


def plot_subpopulations(rows: list[dict], title: str, path: str) -> None:
    shown = rows[:20]
    fig, (ax,) = plots.subplots(1, size=(6.0, max(2.4, 0.6 + 0.32 * len(shown))))
    ax.barh(range(len(shown)), [r["mean_alignment"] for r in shown],
            color=["tab:red" if r["mean_alignment"] < 0 else "tab:blue" for r in shown])
    ax.set_yticks(range(len(shown)), [f"{r['class']} + {r['value']} (n={r['n']})" for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_xlabel("mean group alignment T of the subpopulation")
    ax.set_title(title, fontsize=9)
    plots.save(fig, path)


def caption(ds: GroupDataset, i: int) -> str:
    return f"{ds.class_names[ds.train.y[i]]}/{ds.attr_names[ds.train.a[i]]}"


def top_component(tau_NV: np.ndarray, y_V: np.ndarray, c: int) -> np.ndarray:
    """Top principal component (over train examples) of class c's row-normalised `S = tau^T`,
    as `debias.auto_trak_groups` fits it."""
    from sklearn.decomposition import PCA

    s_VN = np.nan_to_num(np.asarray(tau_NV, np.float64).T[np.asarray(y_V) == c])
    norms = np.linalg.norm(s_VN, axis=1, keepdims=True)
    s_VN = s_VN / np.where(norms > 0, norms, 1.0)
    if len(s_VN) < 2:
        return np.zeros(tau_NV.shape[0])
    return PCA(n_components=1, svd_solver="full").fit(s_VN).components_[0]


def pc_extremes(ds: GroupDataset, tau_NV: np.ndarray, n: int) -> list[dict]:
    """Per class and side of the top component: the n most extreme train examples of the class."""
    out = []
    for c in range(ds.n_classes):
        comp = top_component(tau_NV, ds.val.y, c)
        idx = np.flatnonzero(ds.train.y == c)
        order = idx[np.argsort(comp[idx], kind="stable")]
        for side, pick in (("+", order[::-1][:n]), ("-", order[:n])):
            share = np.bincount(ds.train.a[pick], minlength=len(ds.attr_names)) / max(len(pick), 1)
            out.append({"class": str(ds.class_names[c]), "side": side, "indices": pick.tolist(),
                        "attribute_share": {str(a): float(s) for a, s in zip(ds.attr_names, share)}})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mults = parse_curve(args.curve)
    t0 = time.perf_counter()
    cfg, ds = cli.load(args)
    tcfg = trak_config(args)
    out = cli.out_dir(args, "attribution")
    seed, progress = cfg.seeds[0], cli.show_progress(args)
    folder = run_folder(ds, cfg, tcfg, seed, out)
    tr = trak_scores(ds, cfg, tcfg, seed, folder, progress)
    tau, loss_V = tr["tau"], tr["loss_V"]
    t_N = debias.alignment_scores(tau, ds.val.g, loss_V, args.weighting)
    k_star = int((t_N < 0).sum())
    points = removal_curve(ds, cfg, seed, removal_sets(ds, t_N, mults, seed, not args.no_random), tr["erm"], folder,
                           progress)
    curve_csv, curve_md = curve_table(points, k_star, ds.name, seed)
    common.write_csv(os.path.join(out, "removal_curve.csv"), CURVE_COLUMNS, curve_csv)
    plot_curve(points, k_star, f"{ds.name}, seed {seed}: K* = #(T<0) = {k_star} of {len(t_N)}",
               os.path.join(out, "removal_curve.png"))
    subpops = subpopulations(ds, t_N)
    common.write_csv(os.path.join(out, "subpopulations.csv"), SUBPOP_COLUMNS,
                     [[ds.name, r["class"], r["column"], r["value"], r["n"], f"{r['mean_alignment']:.6g}",
                       f"{r['frac_negative']:.4f}"] for r in subpops])
    plot_subpopulations(subpops, f"{ds.name}: alignment per training subpopulation",
                        os.path.join(out, "subpopulations.png"))
    pseudo, _ = debias.auto_trak_groups(tr["tau_disc"], ds.val.y)
    agreement = debias.group_agreement(pseudo, ds.val.g, ds.val.y, loss_V, minority_groups(ds))
    extremes = pc_extremes(ds, tr["tau_disc"], N_SHOW)
    images = ds.input_kind == "image"
    if images:
        neg = np.argsort(t_N, kind="stable")[:2 * N_SHOW]
        x = np.asarray(take(ds.train.x, neg))
        plots.image_grid([(f"most negative\n{r + 1}", x[r * N_SHOW:(r + 1) * N_SHOW],
                           [caption(ds, i) for i in neg[r * N_SHOW:(r + 1) * N_SHOW]]) for r in range(2)],
                         os.path.join(out, "most_negative.png"), f"{ds.name}: most negative alignment T (train)")
        plots.image_grid([(f"{e['class']}\nPC {e['side']}", np.asarray(take(ds.train.x, np.array(e["indices"]))),
                           [caption(ds, i) for i in e["indices"]]) for e in extremes],
                         os.path.join(out, "auto_trak_pca.png"),
                         f"{ds.name}: train examples at both ends of each class's top TRAK component")
    md = "\n".join([
        f"# Debiasing by data attribution on `{ds.name}`: figures (seed {seed})\n",
        f"Command: `{cli.command_line(MODULE, argv)}`\n",
        f"## Fig. 2: accuracy versus removed training examples (K* = #(T < 0) = {k_star} of {len(t_N)})\n",
        "![removal curve](removal_curve.png)\n", curve_md,
        "## Appendix F: mean alignment per training subpopulation (most negative first)\n",
        "![subpopulations](subpopulations.png)\n",
        common.markdown_table(["Class", "Column", "Value", "n", "Mean T", "T < 0 (%)"],
                              [[r["class"], r["column"], r["value"], r["n"], f"{r['mean_alignment']:.3g}",
                                f"{100 * r['frac_negative']:.1f}"] for r in subpops]),
        *(["![most negative](most_negative.png)\n"] if images else []),
        "## Auto-TRAK bias discovery: extremes of each class's top principal component\n",
        f"Auto-TRAK pseudo-groups vs true validation groups: ARI {agreement['ari']:.3f}, minority recall "
        f"{agreement['minority_recall']:.3f}.\n",
        *(["![auto-trak](auto_trak_pca.png)\n"] if images else []),
        common.markdown_table(["Class", "PC side", f"Spurious attribute among the {N_SHOW} most extreme"],
                              [[e["class"], e["side"], ", ".join(f"{a} {100 * s:.0f}%" for a, s in
                                                                  e["attribute_share"].items())] for e in extremes]),
    ])
    common.atomic_write_text(os.path.join(out, "attribution.md"), md)
    seconds = time.perf_counter() - t0
    cli.write_results(out, "attribution", ds, cfg, argv, MODULE, seconds, seed=seed, trak=dataclasses.asdict(tcfg),
                      trak_kernels=tr["kernels"],
                      weighting=args.weighting, k_star=k_star, curve=points, subpopulations=subpops,
                      auto_trak_agreement=agreement, pc_extremes=extremes)
    print("\n" + curve_md)
    print(f"wrote {out}/attribution.md, removal_curve.png/csv, subpopulations.png/csv"
          + (", most_negative.png, auto_trak_pca.png" if images else "") + f", results.json ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
