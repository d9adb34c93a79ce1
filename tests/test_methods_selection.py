"""Selection regimes and the group-label guard: group-free paths never read group labels."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _methods_data import dataset, feature_set, poison_groups

from gradtune_jax.methods.afr import AFRConfig, afr
from gradtune_jax.methods.baselines import PAPER_ORDER, SPECS, group_label_use
from gradtune_jax.methods.dfr import DFRConfig, dfr
from gradtune_jax.methods.registry import get_method, method_names
from gradtune_jax.methods.selection import (GroupLabelError, HiddenGroups, grid, guard_features, hide_groups,
                                            select)
from gradtune_jax.methods.self_ft import SELFConfig, self_finetune
from gradtune_jax.train.last_layer import HeadConfig

FAST_HEAD = HeadConfig(epochs=5, batch_size=16)


def test_hidden_groups_refuse_every_read():
    sp = hide_groups(dataset().val)
    assert len(sp) == len(sp.y)  # a Split still accepts it
    for read in (lambda: sp.g, sp.masks, lambda: np.asarray(sp.a), lambda: sp.a == 1, lambda: sp.a + 0,
                 lambda: list(sp.a), sp.group_counts):
        with pytest.raises(GroupLabelError):
            read()
    assert isinstance(sp.subset(np.arange(3)).a, HiddenGroups)


def test_hidden_groups_allow_only_marked_positions():
    ds = dataset()
    sp = hide_groups(ds.val, allowed=np.arange(10))
    np.testing.assert_array_equal(sp.subset(np.arange(10)).g, ds.val.subset(np.arange(10)).g)
    with pytest.raises(GroupLabelError):
        sp.subset(np.arange(5, 15)).g


def test_guard_features_exposes_only_the_allowed_halves():
    fs = feature_set()
    g = guard_features(fs, train_groups=False, heldout_groups=True, selection_groups=False)
    np.testing.assert_array_equal(g.D.g, fs.D.g)
    for read in (lambda: g.val_select.g, lambda: g.ds.train.g, lambda: g.ds.test.g):
        with pytest.raises(GroupLabelError):
            read()


def test_grid_is_the_cartesian_product():
    assert grid(a=(1, 2), b=("x",)) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_select_regimes():
    val = dataset().val
    preds = {0: np.zeros(len(val), int), 1: val.y.copy()}  # candidate 1 is perfect
    fit = lambda hp: hp["k"]  # noqa: E731
    pred = preds.__getitem__
    cands = [{"k": 0}, {"k": 1}]
    assert select(cands, {"k": 0}, fit, pred, val, "oracle").hparams == {"k": 1}
    # worst-class never reads groups: it works on a split whose groups are hidden
    assert select(cands, {"k": 0}, fit, pred, hide_groups(val), "worst-class").hparams == {"k": 1}
    fixed = select(cands, {"k": 0}, fit, pred, hide_groups(val), "fixed")
    assert fixed.hparams == {"k": 0} and fixed.scores == [] and fixed.regime == "fixed"
    with pytest.raises(GroupLabelError):  # oracle really needs the groups
        select(cands, {"k": 0}, fit, pred, hide_groups(val), "oracle")
    with pytest.raises(ValueError):
        select(cands, {"k": 0}, fit, pred, val, "best")


def _heads_equal(h1: dict, h2: dict) -> None:
    for k in h1:
        np.testing.assert_allclose(np.asarray(h1[k]), np.asarray(h2[k]), rtol=1e-6, atol=1e-6)


def test_group_free_methods_ignore_poisoned_group_labels():
    fs = feature_set()
    poisoned = dataclasses.replace(fs, ds=poison_groups(poison_groups(fs.ds, "val"), "train"))
    cfg = AFRConfig(gamma_grid=(0.0, 4.0), lam_grid=(0.0, 0.1), steps=20)
    for f in (fs, poisoned):  # same answer whatever the group labels say
        assert afr(f.head, hide_groups(f.D), hide_groups(f.val_select), cfg, "worst-class")[1]["scores"]
    _heads_equal(afr(fs.head, fs.D, fs.val_select, cfg, "worst-class")[0],
                 afr(poisoned.head, poisoned.D, poisoned.val_select, cfg, "worst-class")[0])
    scfg = SELFConfig(score="misclassification", size_grid=(20, 60))
    guarded = guard_features(fs, train_groups=False, heldout_groups=False, selection_groups=False)
    _heads_equal(self_finetune(fs, FAST_HEAD, scfg, 0, "worst-class")[0],
                 self_finetune(guarded, FAST_HEAD, scfg, 0, "worst-class")[0])


def test_dfr_reads_heldout_groups_but_not_selection_groups_when_group_free():
    fs = feature_set()
    cfg = DFRConfig(cs=(1.0, 0.1), n_refits=2)
    g = guard_features(fs, train_groups=False, heldout_groups=True, selection_groups=False)
    h_guarded, _ = dfr(g.D, g.val_select, cfg, 0, "worst-class")
    p = dataclasses.replace(fs, ds=poison_groups(fs.ds, "val", fs.selection))
    h_poisoned, _ = dfr(p.D, p.val_select, cfg, 0, "worst-class")
    _heads_equal(h_guarded, h_poisoned)
    with pytest.raises(GroupLabelError):
        dfr(g.D, g.val_select, cfg, 0, "oracle")


def test_registry_describes_every_row():
    names = method_names()
    assert set(PAPER_ORDER) <= set(names)
    expected = {"group_dro": ("yes/yes", "retrain"), "jtt": ("no/yes", "retrain"), "dfr": ("no/yes", "last_layer"),
                "self": ("no/yes", "last_layer"), "afr": ("no/yes", "last_layer"), "ula": ("no/no", "retrain"),
                "cb_llr": ("no/no", "last_layer"), "rwg": ("yes/yes", "retrain"), "subg": ("yes/yes", "retrain")}
    for name, (labels, kind) in expected.items():
        m = get_method(name)
        assert (m.group_labels, m.kind) == (labels, kind)
        assert set(SPECS[name].defaults) == {"vision", "text", "embedded"}
    assert group_label_use("jtt", "worst-class") == "no/no"
    assert group_label_use("dfr", "worst-class") == "no/yes"
    assert group_label_use("gradtune", "fixed") == "no/no"


def test_table1_lists_all_rows_in_paper_order_with_their_paper_regimes():
    from experiments import table1
    from gradtune_jax.methods.baselines import paper_selection

    assert table1.parse_methods("all")[:9] == ["group_dro", "jtt", "dfr", "self", "afr", "erm", "random_finetune",
                                               "ula", "gradtune"]
    assert [paper_selection(m) for m in ("dfr", "jtt", "gradtune", "ula")] == ["oracle", "oracle", "fixed",
                                                                              "worst-class"]
    assert "paper" in table1.build_parser().parse_args(["--selection", "paper"]).selection
