"""Linear datamodeling score (LDS): how well attribution scores predict retrained margins.

Draw `m` random subsets of half the train set, retrain on each and record the targets' margins;
the prediction for subset j and target t is `sum_{i in subset j} tau[i, t]` (`mask @ tau`);
LDS = mean over targets of the Spearman correlation (scipy) across subsets.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from gradtune_jax.progress import progress as progress_bar


def half_subsets(n_train: int, n_subsets: int, seed: int, alpha: float = 0.5) -> np.ndarray:
    """`(n_subsets, n_train)` boolean masks, each with exactly `int(alpha * n_train)` True entries."""
    rng = np.random.default_rng([seed, n_train])
    size = int(alpha * n_train)
    masks = np.zeros((n_subsets, n_train), bool)
    for j in range(n_subsets):
        masks[j, rng.choice(n_train, size, replace=False)] = True
    return masks


def lds(tau_NT: np.ndarray, masks_MN: np.ndarray, margins_MT: np.ndarray) -> tuple[float, np.ndarray]:
    """LDS and the per-target Spearman correlations `(T,)` (NaN for a constant target, skipped)."""
    from scipy.stats import spearmanr

    pred_MT = masks_MN.astype(np.float64) @ np.asarray(tau_NT, np.float64)
    rho_T = np.full(pred_MT.shape[1], np.nan)
    for t in range(pred_MT.shape[1]):
        if np.ptp(pred_MT[:, t]) > 0 and np.ptp(margins_MT[:, t]) > 0:
            rho_T[t] = spearmanr(pred_MT[:, t], margins_MT[:, t]).statistic
    return float(np.nanmean(rho_T)), rho_T


def evaluate_lds(tau_NT: np.ndarray, retrain_margins: Callable[[np.ndarray], np.ndarray], n_subsets: int = 50,
                 seed: int = 0, progress: bool = True) -> dict:
    """Retrain on `n_subsets` random halves (`retrain_margins(mask_N) -> target margins (T,)`) and
    return `{"lds", "rho_per_target", "masks", "margins"}`."""
    masks = half_subsets(tau_NT.shape[0], n_subsets, seed)
    margins = np.stack([np.asarray(retrain_margins(m))
                        for m in progress_bar(masks, desc="LDS retrain", unit="subset", enabled=progress)])
    value, rho = lds(tau_NT, masks, margins)
    return {"lds": value, "rho_per_target": rho, "masks": masks, "margins": margins}
