"""AFR (Qiu et al., 2023): last-layer retraining with automatic feature reweighting.

On the held-out set D, example i gets weight `exp(-gamma * p_i)` with `p_i` the ERM head's
probability of the true class, normalised to sum to one (optionally so that every class has the
same total weight). The head starts from the ERM head and minimises, full-batch,
`sum_i w_i CE_i + lambda * ||theta - theta_ERM||^2`. Every (gamma, lambda) candidate is trained in
one vmapped, jitted run; the regime picks one on the model-selection half. No group labels are
read except by the `oracle` regime's scoring.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtune_jax.data.dataset import Split
from gradtune_jax.methods.features import head_logits
from gradtune_jax.methods.selection import grid, select


@dataclasses.dataclass(frozen=True)
class AFRConfig:
    """Fixed-regime (gamma, lambda), their search grids, and the full-batch optimiser."""

    gamma: float = 4.0
    lam: float = 0.1
    gamma_grid: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0)
    lam_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4)
    class_balance: bool = True
    steps: int = 500
    lr: float = 1e-2  # Adam, full batch


def afr_weights(p_true: np.ndarray, y: np.ndarray, gamma: float, class_balance: bool = True) -> np.ndarray:
    """`exp(-gamma p_y)` normalised to sum to one (per class to 1/n_classes when `class_balance`)."""
    w = np.exp(-gamma * np.asarray(p_true, np.float64))
    if not class_balance:
        return w / w.sum()
    y = np.asarray(y)
    classes = np.unique(y)
    for c in classes:
        w[y == c] /= w[y == c].sum() * len(classes)
    return w


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def fit_heads_full_batch(head0: dict, feats_ND: jax.Array, y_N: jax.Array, w_KN: jax.Array, lam_K: jax.Array,
                         steps: int, lr: float, offsets_NC: jax.Array | None = None) -> dict:
    """K heads (stacked leaves), head k minimising `sum_i w_KN[k, i] CE(z_i + offsets_i, y_i) +
    lam_K[k] ||theta - head0||^2` from `head0`, full-batch Adam for `steps` steps, all vmapped."""
    tx = optax.adam(lr)
    off_NC = 0.0 if offsets_NC is None else offsets_NC

    def fit_one(w_N, lam):
        def loss(h):
            logits_NC = feats_ND @ h["kernel"] + h["bias"] + off_NC
            ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NC, y_N)
            pull = sum(jnp.sum((h[k] - head0[k]) ** 2) for k in h)
            return jnp.sum(w_N * ce_N) + lam * pull

        def step(carry, _):
            h, opt = carry
            upd, opt = tx.update(jax.grad(loss)(h), opt, h)
            return (optax.apply_updates(h, upd), opt), None

        (h, _), _ = jax.lax.scan(step, (head0, tx.init(head0)), None, length=steps)
        return h

    return jax.vmap(fit_one)(w_KN, lam_K)


def afr(head: dict, D: Split, val_select: Split, cfg: AFRConfig, regime: str) -> tuple[dict, dict]:
    """AFR head trained on D from the ERM `head`, selected by `regime`; returns `(head, info)`."""
    y = np.asarray(D.y)
    logits = head_logits(head, D.x)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p_true = (p / p.sum(-1, keepdims=True))[np.arange(len(y)), y]
    cands = [{"gamma": cfg.gamma, "lam": cfg.lam}] if regime == "fixed" else grid(gamma=cfg.gamma_grid,
                                                                                  lam=cfg.lam_grid)
    w = np.stack([afr_weights(p_true, y, c["gamma"], cfg.class_balance) for c in cands])
    heads = fit_heads_full_batch(jax.tree.map(jnp.asarray, head), jnp.asarray(D.x, jnp.float32),
                                 jnp.asarray(y, jnp.int32), jnp.asarray(w, jnp.float32),
                                 jnp.asarray([c["lam"] for c in cands], jnp.float32), cfg.steps, cfg.lr)
    trained = {tuple(c.items()): {k: np.asarray(v[i]) for k, v in heads.items()} for i, c in enumerate(cands)}
    sel = select(cands, cands[0], lambda hp: trained[tuple(hp.items())],
                 lambda h: head_logits(h, val_select.x).argmax(-1), val_select, regime)
    return sel.model, {**sel.hparams, "scores": sel.scores}
