"""LDS of `gradtune_jax.trak.compute_scores` on a small model (CPU, a few minutes).

A tanh MLP (64 -> 64 -> 10) on scikit-learn's bundled digits (1,000 train, 100 targets from the
rest), trained full-batch with Adam; TRAK on an ensemble of `--checkpoints` models trained on the
full train set with different seeds; `--subsets` random halves retrained (vmapped, fresh init per
subset); LDS = mean Spearman over targets of `mask @ tau` vs the retrained margins.

    python tools/lds_small.py [--checkpoints 1,5] [--subsets 100] [--proj-dim 0 (exact)|k]
"""
from __future__ import annotations

import argparse
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtune_jax.trak import compute_scores, margin
from gradtune_jax.trak.lds import half_subsets, lds

HIDDEN, N_CLASSES, N_TRAIN, N_TARGETS, STEPS, LR, WD = 64, 10, 1000, 100, 300, 1e-2, 1e-4


def apply_fn(p: dict, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def init(key: jax.Array, d_in: int) -> dict:
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (d_in, HIDDEN)) / jnp.sqrt(d_in), "b1": jnp.zeros(HIDDEN),
            "w2": jax.random.normal(k2, (HIDDEN, N_CLASSES)) / jnp.sqrt(HIDDEN), "b2": jnp.zeros(N_CLASSES)}


@functools.partial(jax.jit, static_argnums=(3,))
def train(x: jax.Array, y: jax.Array, w: jax.Array, d_in: int, key: jax.Array) -> dict:
    """Full-batch Adam on the `w`-weighted mean cross-entropy (+ L2 `WD`) from `init(key)`."""
    tx = optax.adam(LR)

    def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y)
        l2 = sum(jnp.sum(v ** 2) for v in jax.tree.leaves(p))
        return jnp.sum(w * ce) / jnp.sum(w) + WD * l2

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    p0 = init(key, d_in)
    (p, _), _ = jax.lax.scan(step, (p0, tx.init(p0)), None, length=STEPS)
    return p


def main() -> None:
    from sklearn.datasets import load_digits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", default="1,5", help="ensemble sizes to report (comma list)")
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--proj-dim", type=int, default=0, help="0 = exact (no projection)")
    ap.add_argument("--lambda-reg", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    d = load_digits()
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(d.target))
    x = (d.data / 16.0).astype(np.float32)
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_TARGETS]
    xtr, ytr, xte, yte = jnp.asarray(x[tr]), jnp.asarray(d.target[tr]), x[te], d.target[te]
    d_in = x.shape[1]

    masks = half_subsets(N_TRAIN, args.subsets, args.seed)
    keys = jax.random.split(jax.random.key(10_000 + args.seed), args.subsets)
    params = jax.vmap(lambda w, k: train(xtr, ytr, w, d_in, k))(jnp.asarray(masks, jnp.float32), keys)
    margins = np.asarray(jax.vmap(lambda p: margin(apply_fn(p, jnp.asarray(xte)), jnp.asarray(yte)))(params))

    ones = jnp.ones(N_TRAIN, jnp.float32)
    sizes = [int(s) for s in args.checkpoints.split(",")]
    full = [train(xtr, ytr, ones, d_in, jax.random.key(s)) for s in range(max(sizes))]
    acc = float(np.mean(np.asarray(apply_fn(full[0], jnp.asarray(xte))).argmax(1) == yte))
    out = {"n_train": N_TRAIN, "n_targets": N_TARGETS, "subsets": args.subsets, "proj_dim": args.proj_dim or None,
           "lambda_reg": args.lambda_reg, "test_acc_model0": acc, "lds": {}}
    for m in sizes:
        tau = compute_scores(apply_fn, full[:m], (x[tr], d.target[tr]), (xte, yte),
                             proj_dim=args.proj_dim or None, lambda_reg=args.lambda_reg, seed=args.seed)
        out["lds"][m] = lds(tau, masks, margins)[0]
        print(f"checkpoints={m}: LDS = {out['lds'][m]:.3f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
