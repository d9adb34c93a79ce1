"""Debiasing by data attribution (paper 2): group alignment, removal, retraining; Auto-TRAK.

- `alignment_scores`: `T_i = (1/|G|) sum_G w_G mean_{z in G} tau(z)_i` with `w_G` the mean
  validation cross-entropy of group G (`weighting="exp_loss"`: `exp` of it).
- `removal_mask`: drop every train example with `T_i < 0` (default) or the K most negative.
- `auto_trak_groups`: per class, the sign of the projection of the L2-row-normalised `S = tau^T`
  on its top principal component -> pseudo-group `2c + (proj > 0)`.
- `trak_erm_ensemble` / `val_attribution` / `retrain_on`: the model side (TRAK on an ERM run,
  retraining from scratch with the same recipe).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.erm import init_state, train_model
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.train.state import TrainState
from gradtune_jax.trak import compute_scores

WEIGHTINGS = ("loss", "exp_loss")


@dataclasses.dataclass(frozen=True)
class TrakConfig:
    """TRAK settings for debiasing: projection, ridge, ERM checkpoints used as the ensemble."""

    proj_dim: int | None = 2048
    lambda_reg: float = 0.0
    n_checkpoints: int = 3  # evenly spaced ERM epochs, the last one included
    batch_size: int = 256
    wrt: str | tuple[str, ...] = "params"  # e.g. ("params", "head") for the head only
    proj_type: str = "normal"
    # Parameters of the attribution matrix Auto-TRAK splits into pseudo-groups (None: `wrt`). The
    # head by default, re-decided with the rank-safe kernel (issue 13, `tools/trak_discovery.py`):
    # of all / head / penultimate conv, the head's pseudo-groups separate the validation loss most
    # on seeds 0, 1, 2 (a rule reading validation class labels and losses only; docs/trak.md).
    discovery_wrt: str | tuple[str, ...] | None = ("params", "head")
    # Kernel inverse: "auto" = pseudo-inverse when X^T X + lambda I is rank deficient (trak.kernels).
    kernel_method: str = "auto"
    store: str | None = None  # a folder: resumable on-disk feature store (trak.store)


def cross_entropy(logits_NC: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy `(N,)` in float64."""
    z = np.asarray(logits_NC, np.float64)
    z = z - z.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(y_N)), np.asarray(y_N)]


def group_weights(loss_V: np.ndarray, groups_V: np.ndarray, weighting: str = "loss") -> dict[int, float]:
    """`{G: w_G}` over the non-empty groups: mean loss of G, or `exp` of it."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    out = {}
    for g in np.unique(groups_V):
        w = float(np.mean(loss_V[groups_V == g]))
        out[int(g)] = float(np.exp(w)) if weighting == "exp_loss" else w
    return out


def alignment_scores(tau_NV: np.ndarray, groups_V: np.ndarray, loss_V: np.ndarray,
                     weighting: str = "loss") -> np.ndarray:
    """Group alignment `T (n_train,)` from `tau (n_train, n_val)`, val groups and val losses."""
    groups_V = np.asarray(groups_V)
    w = group_weights(np.asarray(loss_V, np.float64), groups_V, weighting)
    t_N = np.zeros(tau_NV.shape[0], np.float64)
    for g, wg in w.items():
        t_N += wg * np.asarray(tau_NV[:, groups_V == g], np.float64).mean(1)
    return t_N / len(w)


def removal_mask(t_N: np.ndarray, k: int | None = None, y_N: np.ndarray | None = None) -> np.ndarray:
    """Boolean keep-mask: removes `T < 0` (k None) or the k most negative (stable order).

    With labels `y_N`, each class keeps at least its highest-scoring example, so the retraining
    set never loses a class.
    """
    t_N = np.asarray(t_N, np.float64)
    keep = np.ones(len(t_N), bool)
    if k is None:
        keep &= t_N >= 0
    else:
        keep[np.argsort(t_N, kind="stable")[:max(0, min(k, len(t_N)))]] = False
    if y_N is not None:
        for c in np.unique(y_N):
            cls = np.flatnonzero(np.asarray(y_N) == c)
            if not keep[cls].any():
                keep[cls[np.argmax(t_N[cls])]] = True
    return keep


def auto_trak_groups(tau_NV: np.ndarray, y_V: np.ndarray) -> tuple[np.ndarray, dict]:
    """Auto-TRAK pseudo-groups `(n_val,)` and info.

    `S = tau^T` rows are L2-normalised (all-zero rows stay zero); per class c a 1-component PCA
    is fitted on that class's rows (centred) and the uncentred rows are projected on it:
    pseudo-group `2c + (proj > 0)`. Degenerate classes (one row, zero variance) go to `2c`; when
    the uncentred sign leaves one side empty, the split falls back to the sign of the centred
    projection. Never NaN; every returned group is non-empty.
    """
    from sklearn.decomposition import PCA

    s_VN = np.asarray(tau_NV, np.float64).T
    s_VN = np.nan_to_num(s_VN, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(s_VN, axis=1, keepdims=True)
    s_VN = s_VN / np.where(norms > 0, norms, 1.0)
    y_V = np.asarray(y_V)
    groups = np.zeros(len(y_V), np.int64)
    fallback: list[int] = []
    for c in np.unique(y_V):
        idx = np.flatnonzero(y_V == c)
        side = np.zeros(len(idx), bool)
        rows = s_VN[idx]
        if len(idx) >= 2 and np.ptp(rows, axis=0).max() > 0:
            pca = PCA(n_components=1, svd_solver="full").fit(rows)
            proj = rows @ pca.components_[0]
            side = proj > 0
            if side.all() or not side.any():
                side = proj - proj.mean() > 0
                fallback.append(int(c))
        groups[idx] = 2 * int(c) + side
    return groups, {"fallback_classes": fallback}


def minority_recall(pseudo_V: np.ndarray, true_g_V: np.ndarray, y_V: np.ndarray, loss_V: np.ndarray,
                    minority_groups: set[int]) -> float:
    """Fraction of the validation examples of true minority groups that fall, within their class,
    in the pseudo-group with the higher mean loss (the one alignment weights most)."""
    hits, total = 0, 0
    for c in np.unique(y_V):
        cls = np.asarray(y_V) == c
        pgs = np.unique(pseudo_V[cls])
        hard = max(pgs, key=lambda g: float(np.mean(loss_V[cls & (pseudo_V == g)])))
        mino = cls & np.isin(true_g_V, list(minority_groups))
        hits += int(np.sum(mino & (pseudo_V == hard)))
        total += int(mino.sum())
    return hits / total if total else float("nan")


def group_agreement(pseudo_V: np.ndarray, true_g_V: np.ndarray, y_V: np.ndarray, loss_V: np.ndarray,
                    minority_groups: set[int]) -> dict:
    """Adjusted Rand index (sklearn) and minority recall of pseudo-groups against true groups."""
    from sklearn.metrics import adjusted_rand_score

    return {"ari": float(adjusted_rand_score(true_g_V, pseudo_V)),
            "minority_recall": minority_recall(pseudo_V, true_g_V, y_V, loss_V, minority_groups)}


def checkpoint_epochs(epochs: int, n: int) -> list[int]:
    """`n` evenly spaced epochs ending at `epochs` (deduplicated, >= 1)."""
    return sorted({max(1, round(epochs * (i + 1) / n)) for i in range(n)})


def train_with_checkpoints(ds: GroupDataset, recipe: Recipe, seed: int, epochs: list[int], *,
                           progress: bool = True) -> list[TrainState]:
    """Train `recipe` once, returning the states after each of `epochs` (last = final model).

    Uses `fit`'s resume: the run is cut at each epoch of the list and continued from its orbax
    checkpoint (in a temporary folder); epoch e's randomness is `default_rng([seed, e])` and the
    schedule spans `recipe.epochs`, so the final model equals an uninterrupted run's.
    """
    import tempfile

    state = init_state(ds, recipe, seed)
    states = []
    with tempfile.TemporaryDirectory(prefix="erm_ckpts_") as workdir:
        for e in epochs:
            state, _ = fit(state, ds.train, recipe, stop_at=e, seed=seed, workdir=workdir,
                           desc=f"ERM seed {seed} (to epoch {e})", progress=progress)
            states.append(state)
    return states


def model_apply(state: TrainState) -> Callable[[Any, Any], Any]:
    """`apply_fn(variables, x) -> logits` in eval mode (BatchNorm statistics inside `variables`)."""
    fn = state.apply_fn

    def apply_fn(variables, x):
        return fn(variables, x, train=False)[0]

    return apply_fn


def variables(state: TrainState) -> dict:
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def val_attribution(states: list[TrainState], train: Split, targets: Split, cfg: TrakConfig, seed: int, *,
                    progress: bool = True, info: dict | None = None) -> np.ndarray:
    """TRAK `tau (n_train, n_targets)` of an ensemble of ERM states (margins, eval mode); `info`,
    when given, receives compute_scores' kernel report (rank, condition number, method)."""
    tau, report = compute_scores(model_apply(states[-1]), [variables(s) for s in states], (train.x, train.y),
                                 (targets.x, targets.y), proj_dim=cfg.proj_dim, lambda_reg=cfg.lambda_reg, seed=seed,
                                 batch_size=cfg.batch_size, wrt=cfg.wrt, proj_type=cfg.proj_type,
                                 kernel_method=cfg.kernel_method, store=cfg.store, return_info=True,
                                 progress=progress)
    if info is not None:
        info.update(report)
    return tau


def _key_path(wrt: str | tuple[str, ...] | None) -> tuple[str, ...]:
    return () if wrt is None else (wrt,) if isinstance(wrt, str) else tuple(wrt)


def discovery_attribution(states: list[TrainState], train: Split, targets: Split, cfg: TrakConfig, seed: int,
                          tau_NV: np.ndarray | None = None, *, progress: bool = True,
                          info: dict | None = None) -> np.ndarray:
    """The matrix Auto-TRAK splits: TRAK w.r.t. `cfg.discovery_wrt`; `tau_NV` (the alignment
    matrix, w.r.t. `cfg.wrt`) is returned as is when both name the same parameters."""
    wrt = cfg.wrt if cfg.discovery_wrt is None else cfg.discovery_wrt
    if tau_NV is not None and _key_path(wrt) == _key_path(cfg.wrt):
        return tau_NV
    return val_attribution(states, train, targets, dataclasses.replace(cfg, wrt=wrt), seed, progress=progress,
                           info=info)


def val_losses(state: TrainState, split: Split, batch_size: int = 512) -> np.ndarray:
    """Per-example cross-entropy of `state` (eval mode) on `split`."""
    logits, _ = predict(state, split.x, batch_size)
    return cross_entropy(logits, split.y)


def retrain_on(ds: GroupDataset, recipe: Recipe, seed: int, keep_N: np.ndarray, *, desc: str = "retrain",
               progress: bool = True) -> TrainState:
    """Retrain from the recipe's initialisation on the kept train examples (the learning-rate
    schedule spans the epochs of the kept set)."""
    return train_model(ds, recipe, seed, train=ds.train.subset(np.flatnonzero(keep_N)), desc=desc,
                       progress=progress)
