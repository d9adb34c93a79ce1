"""SELF (LaBonte et al., 2024): fine-tune the ERM head on the M' points of D that the ERM model
gets most wrong (`misclassification`: largest ERM cross-entropy, misclassified first) or on which
it disagrees most with an early checkpoint (`es_disagreement`: KL(p_final || p_early)), with
GradTune's class-balanced last-layer recipe (`methods.gradtune.finetune_on`). The early
checkpoint is `methods.early` (shared with JTT). M' is selected by the regime; no group labels.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import Split
from gradtune_jax.methods.features import FeatureSet, head_logits
from gradtune_jax.methods.gradtune import finetune_on
from gradtune_jax.methods.selection import grid, select
from gradtune_jax.train.last_layer import HeadConfig

SCORES = ("es_disagreement", "misclassification")


@dataclasses.dataclass(frozen=True)
class SELFConfig:
    """Selection score, early checkpoint epochs, fixed M' and its searched grid."""

    score: str = "es_disagreement"
    early_epochs: int = 5
    size: int = 500
    size_grid: tuple[int, ...] = (20, 100, 250, 500)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def self_scores(final_logits: np.ndarray, y: np.ndarray, score: str, early_logits: np.ndarray | None = None) -> np.ndarray:
    """Per-example selection scores on D (higher = selected first)."""
    lf = _log_softmax(final_logits)
    if score == "misclassification":
        return -lf[np.arange(len(y)), np.asarray(y)]
    if score == "es_disagreement":
        if early_logits is None:
            raise ValueError("score 'es_disagreement' needs the early checkpoint's logits")
        return np.sum(np.exp(lf) * (lf - _log_softmax(early_logits)), axis=-1)
    raise ValueError(f"SELF score must be one of {SCORES}, got {score!r}")


def top_m(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the `m` highest scores (all when fewer), sorted."""
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:m])


def self_finetune(fs: FeatureSet, head_cfg: HeadConfig, cfg: SELFConfig, seed: int, regime: str,
                  early_logits_D: np.ndarray | None = None) -> tuple[dict, dict]:
    """SELF head and info (chosen M', selected indices into D, scores on the selection half)."""
    D: Split = fs.D
    scores = self_scores(head_logits(fs.head, D.x), D.y, cfg.score, early_logits_D)

    def fit(hp: dict) -> dict:
        return finetune_on(fs, top_m(scores, hp["size"]), head_cfg, seed)

    sizes = sorted({min(s, len(D)) for s in cfg.size_grid})
    sel = select(grid(size=sizes), {"size": cfg.size}, fit, lambda h: head_logits(h, fs.val_select.x).argmax(-1),
                 fs.val_select, regime)
    return sel.model, {"size": sel.hparams["size"], "selected": top_m(scores, sel.hparams["size"]),
                       "scores": sel.scores}
