"""Cached eval-mode features of an ERM model, the input of every last-layer method.

One `FeatureSet` per (dataset, seed, ERM checkpoint): last-layer methods never re-run the
backbone. It is itself a `GroupDataset` whose inputs are features, plus the ERM head and the
seeded held-out/model-selection halves of validation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.data.splits import heldout_split
from gradtune_jax.io import atomic_save_npz
from gradtune_jax.metrics import evaluate


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Features of every split, the ERM head, and the validation halves for one seed."""

    ds: GroupDataset
    head: dict  # {"kernel": (D, C), "bias": (C,)} as numpy
    heldout: np.ndarray  # indices into val: the held-out set D
    selection: np.ndarray  # indices into val: the model-selection half

    @property
    def D(self) -> Split:
        return self.ds.val.subset(self.heldout)

    @property
    def val_select(self) -> Split:
        return self.ds.val.subset(self.selection)

    def save(self, path: str) -> None:
        arrays = {"head_kernel": self.head["kernel"], "head_bias": self.head["bias"],
                  "heldout": self.heldout, "selection": self.selection}
        for s in ("train", "val", "test"):
            sp = self.ds.split(s)
            arrays.update({f"{s}_x": sp.x, f"{s}_y": sp.y, f"{s}_a": sp.a})
        atomic_save_npz(path, **arrays)


def make_feature_set(ds_feats: GroupDataset, head: dict, seed: int) -> FeatureSet:
    heldout, selection = heldout_split(len(ds_feats.val), seed)
    return FeatureSet(ds=ds_feats, head={k: np.asarray(v, np.float32) for k, v in head.items()},
                      heldout=heldout, selection=selection)


def load_feature_set(path: str, template: GroupDataset) -> FeatureSet:
    """Inverse of `FeatureSet.save`, taking names and group structure from `template`."""
    z = np.load(path)
    splits = {s: dataclasses.replace(template.split(s), x=z[f"{s}_x"]) for s in ("train", "val", "test")}
    ds = dataclasses.replace(template, **splits, input_kind="features")
    return FeatureSet(ds=ds, head={"kernel": z["head_kernel"], "bias": z["head_bias"]},
                      heldout=z["heldout"], selection=z["selection"])


def head_logits(head: dict, feats: np.ndarray) -> np.ndarray:
    return np.asarray(feats, np.float32) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])


def evaluate_head(head: dict, split: Split, train_group_counts=None) -> dict:
    """Metrics of a linear head on a features split."""
    pred = head_logits(head, split.x).argmax(-1)
    return evaluate(pred, split.y, split.masks(), train_group_counts)
