"""Model selection regimes and the guard that keeps methods off group labels they must not read.

Regimes (stated for every run):
- `oracle`: validation group labels, WGA on the model-selection half of validation;
- `worst-class`: validation worst-class accuracy on that half (class labels only, no groups);
- `fixed`: no search, the method's default hyperparameters.

The guard: `hide_groups` replaces a split's spurious attribute `a` with `HiddenGroups`, which has
a length (so `Split` accepts it) but raises `GroupLabelError` on any read of its values (`g`,
`masks()`, `np.asarray(a)`, comparisons, arithmetic). Methods receive data whose forbidden group
labels are hidden this way, so reading them is an error, not a silent leak.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence, TypeVar

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.methods.features import FeatureSet
from gradtune_jax.metrics import evaluate, worst_class_accuracy

REGIMES = ("oracle", "worst-class", "fixed")
H = TypeVar("H")


class GroupLabelError(RuntimeError):
    """A method read group labels that its regime forbids."""


class HiddenGroups:
    """Stand-in for a split's `a`: indexable where allowed, unreadable elsewhere.

    `allowed` marks the positions whose values may be read (e.g. the held-out half of validation
    for DFR while the model-selection half stays hidden). Indexing returns a plain array when every
    selected position is allowed, else another `HiddenGroups`; any other use raises.
    """

    __array_ufunc__ = None  # numpy defers binary operators to us, and we refuse

    def __init__(self, values: np.ndarray, allowed: np.ndarray | None = None):
        self._values = np.asarray(values)
        self._allowed = np.zeros(len(self._values), bool) if allowed is None else np.asarray(allowed, bool)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, idx):
        if np.all(self._allowed[idx]):
            return self._values[idx]
        return HiddenGroups(self._values[idx], self._allowed[idx])

    def _refuse(self, *_, **__):
        raise GroupLabelError("this method may not read these group labels under its selection regime")

    __array__ = __iter__ = __eq__ = __ne__ = __lt__ = __gt__ = __add__ = __radd__ = __mul__ = __rmul__ = _refuse
    astype = tolist = _refuse
    __hash__ = None


def hide_groups(split: Split, allowed: np.ndarray | None = None) -> Split:
    """`split` with its group labels hidden (except at the positions marked in `allowed`)."""
    a = split.a
    if isinstance(a, HiddenGroups):
        return split  # already hidden; never re-expose
    mask = None
    if allowed is not None:
        mask = np.zeros(len(split), bool)
        mask[np.asarray(allowed)] = True
    return dataclasses.replace(split, a=HiddenGroups(a, mask), group_masks=None)


def guard_dataset(ds: GroupDataset, *, train_groups: bool, val_groups: np.ndarray | bool) -> GroupDataset:
    """`ds` with train groups hidden unless `train_groups`, val groups visible only at the
    indices `val_groups` (True: all, False: none), and test groups always hidden."""
    train = ds.train if train_groups else hide_groups(ds.train)
    if val_groups is True:
        val = ds.val
    else:
        val = hide_groups(ds.val, None if val_groups is False else val_groups)
    return dataclasses.replace(ds, train=train, val=val, test=hide_groups(ds.test))


def guard_features(fs: FeatureSet, *, train_groups: bool, heldout_groups: bool, selection_groups: bool) -> FeatureSet:
    """`fs` whose group labels are readable only where allowed (held-out half D, selection half)."""
    allowed = [fs.heldout] * heldout_groups + [fs.selection] * selection_groups
    val_groups: np.ndarray | bool = np.concatenate(allowed) if allowed else False
    if heldout_groups and selection_groups:
        val_groups = True
    return dataclasses.replace(fs, ds=guard_dataset(fs.ds, train_groups=train_groups, val_groups=val_groups))


def check_regime(regime: str) -> None:
    if regime not in REGIMES:
        raise ValueError(f"selection regime must be one of {REGIMES}, got {regime!r}")


def selection_score(pred: np.ndarray, split: Split, regime: str) -> float:
    """Validation score of predictions: WGA (`oracle`) or worst-class accuracy (`worst-class`)."""
    check_regime(regime)
    if regime == "oracle":
        return evaluate(pred, split.y, split.masks())["wga"]
    if regime == "worst-class":
        return worst_class_accuracy(pred, split.y)
    raise ValueError("regime 'fixed' does not score candidates")


def grid(**axes: Sequence) -> list[dict]:
    """Cartesian product of named hyperparameter axes, as a list of dicts."""
    out: list[dict] = [{}]
    for name, values in axes.items():
        out = [{**c, name: v} for c in out for v in values]
    return out


@dataclasses.dataclass
class Selected:
    """The chosen model, its hyperparameters, the regime and every candidate's score."""

    model: object
    hparams: dict
    regime: str
    scores: list[tuple[dict, float]]


def select(candidates: Sequence[dict], default: dict, fit: Callable[[dict], H],
           predict: Callable[[H], np.ndarray], val: Split, regime: str) -> Selected:
    """Fit every candidate and keep the best on `val` (ties: first); `fixed` fits only `default`.

    `val` is the model-selection split; unless the regime is `oracle`, its group labels are hidden
    before scoring, so a group-free regime cannot read them.
    """
    check_regime(regime)
    if regime == "fixed" or len(candidates) <= 1:
        hp = dict(default) if regime == "fixed" or not candidates else dict(candidates[0])
        return Selected(fit(hp), hp, "fixed", [])
    if regime != "oracle":
        val = hide_groups(val)
    best, best_hp, best_s, scores = None, None, -np.inf, []
    for hp in candidates:
        model = fit(dict(hp))
        s = selection_score(predict(model), val, regime)
        scores.append((dict(hp), float(s)))
        if s > best_s:
            best, best_hp, best_s = model, dict(hp), s
    return Selected(best, best_hp, regime, scores)
