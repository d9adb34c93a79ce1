"""DFR (Kirichenko et al., 2023): group-balanced L1 logistic regression on held-out embeddings.

Embeddings of the held-out set D are standardised (`StandardScaler` fit on D); for each C the
model averages `n_refits` L1 logistic regressions (scikit-learn, liblinear), each on a fresh
group-balanced subsample of D, and is scored on the model-selection half. The scaler is folded
into the returned head, so it applies to raw features. Needs the group labels of D (val: yes).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from gradtune_jax.data.dataset import Split
from gradtune_jax.methods.features import head_logits
from gradtune_jax.methods.selection import grid, select


@dataclasses.dataclass(frozen=True)
class DFRConfig:
    """C grid (searched unless the regime is `fixed`), fixed-regime C, refits, solver settings."""

    cs: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    c: float = 1.0
    n_refits: int = 20
    max_iter: int = 1000


def l1_logistic_regression(c: float, seed: int, max_iter: int = 1000) -> LogisticRegression:
    """liblinear L1 logistic regression (`l1_ratio=1` from scikit-learn 1.8, `penalty="l1"` before)."""
    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=c, solver="liblinear", max_iter=max_iter, random_state=seed, **l1)


def group_balanced_subsample(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with `min_g count(g)` examples of every present group, drawn without replacement."""
    g = np.asarray(g)
    groups, counts = np.unique(g, return_counts=True)
    m = counts.min()
    idx = [rng.choice(np.flatnonzero(g == k), m, replace=False) for k in groups]
    return np.sort(np.concatenate(idx))


def to_head(coef: np.ndarray, intercept: np.ndarray, scaler: StandardScaler, n_classes: int) -> dict:
    """A `{"kernel" (D, C), "bias" (C,)}` head on raw features from a logistic regression on
    standardised ones. Binary sklearn models have one row `w`: the head is `[-w/2, w/2]`, whose
    softmax equals sklearn's sigmoid."""
    coef = np.atleast_2d(coef)
    intercept = np.atleast_1d(intercept)
    if n_classes == 2 and coef.shape[0] == 1:
        coef = np.concatenate([-coef, coef]) / 2
        intercept = np.concatenate([-intercept, intercept]) / 2
    kernel = coef.T / scaler.scale_[:, None]
    bias = intercept - scaler.mean_ @ kernel
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}


def fit_dfr(feats: np.ndarray, y: np.ndarray, g: np.ndarray, c: float, n_refits: int, seed: int,
            n_classes: int, max_iter: int = 1000) -> dict:
    """Average of `n_refits` L1 logistic regressions, each on a group-balanced subsample."""
    feats = np.asarray(feats, np.float64)
    scaler = StandardScaler().fit(feats)
    z = scaler.transform(feats)
    coefs, intercepts = [], []
    for r in range(n_refits):
        idx = group_balanced_subsample(g, np.random.default_rng([seed, r]))
        lr = l1_logistic_regression(c, seed, max_iter)
        lr.fit(z[idx], y[idx])
        coefs.append(lr.coef_)
        intercepts.append(lr.intercept_)
    return to_head(np.mean(coefs, 0), np.mean(intercepts, 0), scaler, n_classes)


def dfr(D: Split, val_select: Split, cfg: DFRConfig, seed: int, regime: str) -> tuple[dict, dict]:
    """DFR head trained on `D` (its group labels are read) and selected on `val_select` by `regime`.

    Every candidate C is the full `cfg.n_refits` average, so the selected head is the final one.
    Returns `(head, info)`.
    """
    y, g = np.asarray(D.y), np.asarray(D.g)

    def fit(hp: dict) -> dict:
        return fit_dfr(D.x, y, g, hp["c"], cfg.n_refits, seed, D.n_classes, cfg.max_iter)

    sel = select(grid(c=cfg.cs), {"c": cfg.c}, fit, lambda h: head_logits(h, val_select.x).argmax(-1),
                 val_select, regime)
    n_sub = len(group_balanced_subsample(g, np.random.default_rng([seed, 0])))
    return sel.model, {"c": sel.hparams["c"], "scores": sel.scores, "subsample_size": n_sub}
