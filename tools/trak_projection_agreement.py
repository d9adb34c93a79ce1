"""Projected TRAK scores vs exact ones, ours and traker's, on the same trained MLP (needs torch +
traker for the traker columns).

The tanh MLP of `tools/lds_small.py` (64 -> 64 -> 10, 4,874 parameters) trained on 1,000 digits;
100 targets. Exact scores (no projection) from `compute_scores` and from traker's NoOpProjector;
projected scores (Gaussian, k = `--proj-dim`) for projection seeds 0 and 1 from both; Pearson
correlation of the flattened score matrices and the mean per-target Spearman correlation; and the
LDS of every variant on the same random-half retrainings.

    python -m tools.trak_projection_agreement [--proj-dim 512] [--subsets 50]
"""
from __future__ import annotations

import argparse
import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.trak import compute_scores, margin
from gradtune_jax.trak.lds import half_subsets, lds
from tools.lds_small import N_TARGETS, N_TRAIN, apply_fn, train


def traker_scores(params: dict, train_xy, target_xy, proj_dim: int | None, seed: int, lambda_reg: float) -> np.ndarray:
    import torch
    from trak import TRAKer
    from trak.projectors import NoOpProjector

    w1 = np.asarray(params["w1"])
    model = torch.nn.Sequential(torch.nn.Linear(w1.shape[0], w1.shape[1]), torch.nn.Tanh(),
                                torch.nn.Linear(w1.shape[1], np.asarray(params["w2"]).shape[1]))
    t = lambda a: torch.tensor(np.ascontiguousarray(np.asarray(a, np.float32)))  # noqa: E731
    state = {"0.weight": t(w1.T), "0.bias": t(params["b1"]), "2.weight": t(np.asarray(params["w2"]).T),
             "2.bias": t(params["b2"])}
    model.load_state_dict(state)
    model.eval()
    tr = (torch.tensor(train_xy[0]), torch.tensor(train_xy[1]))
    tg = (torch.tensor(target_xy[0]), torch.tensor(target_xy[1]))
    kw = dict(projector=NoOpProjector(device="cpu")) if proj_dim is None else dict(proj_dim=proj_dim,
                                                                                  projector_seed=seed)
    with tempfile.TemporaryDirectory() as d:
        tk = TRAKer(model=model, task="image_classification", train_set_size=len(tr[1]), save_dir=d, device="cpu",
                    use_half_precision=False, lambda_reg=lambda_reg, **kw)
        tk.load_checkpoint(state, model_id=0)
        for s in range(0, len(tr[1]), 250):
            tk.featurize(batch=(tr[0][s:s + 250], tr[1][s:s + 250]), num_samples=len(tr[1][s:s + 250]))
        tk.finalize_features()
        tk.start_scoring_checkpoint(exp_name="agree", checkpoint=state, model_id=0, num_targets=len(tg[1]))
        tk.score(batch=tg, num_samples=len(tg[1]))
        return np.array(tk.finalize_scores(exp_name="agree"), np.float64)


def spearman_per_target(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(a[:, t], b[:, t]).statistic for t in range(a.shape[1])]))


def main() -> None:
    from sklearn.datasets import load_digits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--lambda-reg", type=float, default=1e-2)
    ap.add_argument("--subsets", type=int, default=50)
    ap.add_argument("--no-traker", action="store_true")
    args = ap.parse_args()
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = (d.data / 16.0).astype(np.float32)
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_TARGETS]
    train_xy, target_xy = (x[tr], d.target[tr].astype(np.int64)), (x[te], d.target[te].astype(np.int64))
    params = train(jnp.asarray(x[tr]), jnp.asarray(d.target[tr]), jnp.ones(N_TRAIN), x.shape[1], jax.random.key(0))

    def ours(proj_dim, seed):
        return compute_scores(apply_fn, [params], train_xy, target_xy, proj_dim=proj_dim,
                              lambda_reg=args.lambda_reg, seed=seed).astype(np.float64)

    s = {"ours_exact": ours(None, 0), "ours_p0": ours(args.proj_dim, 0), "ours_p1": ours(args.proj_dim, 1)}
    if not args.no_traker:
        s["traker_exact"] = traker_scores(params, train_xy, target_xy, None, 0, args.lambda_reg)
        s["traker_p0"] = traker_scores(params, train_xy, target_xy, args.proj_dim, 0, args.lambda_reg)
        s["traker_p1"] = traker_scores(params, train_xy, target_xy, args.proj_dim, 1, args.lambda_reg)
    pairs = [("ours_p0", "ours_p1"), ("ours_p0", "ours_exact"), ("ours_p1", "ours_exact")]
    if not args.no_traker:
        pairs += [("traker_p0", "traker_p1"), ("traker_p0", "traker_exact"), ("traker_p1", "traker_exact"),
                  ("ours_exact", "traker_exact"), ("ours_p0", "traker_p0")]
    out = {"proj_dim": args.proj_dim, "lambda_reg": args.lambda_reg, "n_params": 4874, "correlations": {}}
    for a, b in pairs:
        out["correlations"][f"{a} vs {b}"] = {
            "pearson": float(np.corrcoef(s[a].ravel(), s[b].ravel())[0, 1]),
            "spearman_per_target": spearman_per_target(s[a], s[b])}
    if not args.no_traker:
        out["exact_rel_err_vs_traker"] = float(np.linalg.norm(s["ours_exact"] - s["traker_exact"])
                                               / np.linalg.norm(s["traker_exact"]))
    masks = half_subsets(N_TRAIN, args.subsets, 0)
    keys = jax.random.split(jax.random.key(10_000), args.subsets)
    sub = jax.vmap(lambda w, k: train(jnp.asarray(x[tr]), jnp.asarray(d.target[tr]), w, x.shape[1], k))(
        jnp.asarray(masks, jnp.float32), keys)
    margins = np.asarray(jax.vmap(lambda p: margin(apply_fn(p, jnp.asarray(x[te])), jnp.asarray(d.target[te])))(sub))
    out["lds"] = {k: lds(v, masks, margins)[0] for k, v in s.items()}
    for k, v in out["correlations"].items():
        print(f"{k:<32} pearson {v['pearson']:.3f}  spearman/target {v['spearman_per_target']:.3f}")
    print("LDS:", {k: round(v, 3) for k, v in out["lds"].items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
