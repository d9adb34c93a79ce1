"""Debiasing by attribution: alignment math, removal, Auto-TRAK edge cases, LDS, the CLI."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from gradtune_jax.methods import debias
from gradtune_jax.trak.lds import evaluate_lds, half_subsets, lds


def test_alignment_hand_made():
    # 3 train examples, 4 val examples in groups [0, 0, 1, 1] with losses [1, 3, 0.5, 0.5]
    tau = np.array([[1.0, 3.0, -2.0, -2.0],
                    [-1.0, -1.0, 4.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0]])
    groups, loss = np.array([0, 0, 1, 1]), np.array([1.0, 3.0, 0.5, 0.5])
    # w_0 = 2, w_1 = 0.5; T = (w_0 * mean_G0 + w_1 * mean_G1) / 2
    t = debias.alignment_scores(tau, groups, loss)
    np.testing.assert_allclose(t, [(2 * 2.0 + 0.5 * -2.0) / 2, (2 * -1.0 + 0.5 * 2.0) / 2, 0.0])
    t_exp = debias.alignment_scores(tau, groups, loss, "exp_loss")
    np.testing.assert_allclose(t_exp[0], (np.exp(2.0) * 2.0 + np.exp(0.5) * -2.0) / 2)
    assert debias.group_weights(loss, groups) == {0: 2.0, 1: 0.5}
    with pytest.raises(ValueError):
        debias.group_weights(loss, groups, "bogus")


def test_removal_mask_default_k_and_class_guard():
    t = np.array([0.5, -1.0, -0.2, 0.0, -3.0])
    np.testing.assert_array_equal(debias.removal_mask(t), [True, False, False, True, False])
    np.testing.assert_array_equal(debias.removal_mask(t, k=2), [True, False, True, True, False])
    np.testing.assert_array_equal(debias.removal_mask(t, k=0), np.ones(5, bool))
    # every example of class 1 negative: its best one is kept anyway
    keep = debias.removal_mask(t, y_N=np.array([0, 1, 1, 0, 1]))
    np.testing.assert_array_equal(keep, [True, False, True, True, False])


def test_auto_trak_recovers_planted_split():
    rng = np.random.default_rng(0)
    n_train = 30
    proto = rng.normal(size=(4, n_train))
    g_true = np.repeat([0, 1, 2, 3], [12, 4, 10, 6])
    tau = (proto[g_true] + 0.1 * rng.normal(size=(len(g_true), n_train))).T  # (train, val)
    y = g_true // 2
    pseudo, info = debias.auto_trak_groups(tau, y)
    assert set(np.unique(pseudo)) <= {0, 1, 2, 3}
    assert np.all(pseudo // 2 == y)
    loss = np.where(np.isin(g_true, [1, 2]), 2.0, 0.1)
    agree = debias.group_agreement(pseudo, g_true, y, loss, minority_groups={1, 2})
    assert agree["ari"] > 0.99 and agree["minority_recall"] == 1.0


@pytest.mark.parametrize("case", ["zeros", "single", "constant", "nan", "one_sided"])
def test_auto_trak_degenerate_inputs_never_nan_or_empty(case):
    y = np.array([0, 0, 0, 1, 1, 1])
    tau = np.random.default_rng(1).normal(size=(8, 6))
    if case == "zeros":
        tau = np.zeros((8, 6))
    elif case == "single":
        y = np.array([0, 1, 1, 1, 1, 1])
    elif case == "constant":
        tau = np.ones((8, 6))
    elif case == "nan":
        tau[0, 0] = np.nan
    elif case == "one_sided":  # zero rows and one row +-r: one sign of the PC puts all on one side
        r = np.random.default_rng(2).normal(size=8)
        tau = np.zeros((8, 6))
        tau[:, 2], tau[:, 5] = r, -r
    pseudo, info = debias.auto_trak_groups(tau, y)
    assert pseudo.shape == (6,) and np.all(pseudo // 2 == y)
    t = debias.alignment_scores(np.nan_to_num(tau), pseudo, np.ones(6))
    assert np.all(np.isfinite(t))
    keep = debias.removal_mask(t, y_N=np.array([0, 1, 0, 1, 0, 1, 0, 1]))
    assert keep.any()
    if case == "one_sided":
        assert len(np.unique(pseudo)) == 4 and len(info["fallback_classes"]) == 1


def test_checkpoint_epochs():
    assert debias.checkpoint_epochs(30, 3) == [10, 20, 30]
    assert debias.checkpoint_epochs(2, 3) == [1, 2]
    assert debias.checkpoint_epochs(5, 1) == [5]


def test_lds_perfect_and_half_subsets():
    masks = half_subsets(10, 20, seed=0)
    assert masks.shape == (20, 10) and np.all(masks.sum(1) == 5)
    tau = np.random.default_rng(0).normal(size=(10, 3))
    margins = masks @ tau * 2.0 + 1.0  # monotone in the prediction
    value, rho = lds(tau, masks, margins)
    assert value == pytest.approx(1.0) and rho.shape == (3,)
    value_neg, _ = lds(-tau, masks, margins)
    assert value_neg == pytest.approx(-1.0)
    res = evaluate_lds(tau, lambda mask: mask @ tau + 0.5, n_subsets=12, progress=False)
    assert res["lds"] == pytest.approx(1.0) and res["masks"].shape == (12, 10)


def test_debias_table_cli_quick(tmp_path):
    from experiments import debias_table

    out = str(tmp_path / "run")
    rc = debias_table.main(["--quick", "--methods", "erm,auto_trak", "--curve", "none", "--out", out,
                            "--no-progress"])
    assert rc == 0
    with open(os.path.join(out, "debias_table.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "dataset,method,bal_mean,bal_std,wga_mean,wga_std"
    assert [ln.split(",")[1] for ln in lines[1:]] == ["erm", "auto_trak"]
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["group_label_regime"] == {"erm": "no/no", "auto_trak": "no/no"}
    assert 0.0 <= res["per_seed"]["0"]["auto_trak_groups"]["minority_recall"] <= 1.0
    assert os.path.exists(os.path.join(out, "debias_table.md"))


def test_debias_table_cli_bad_argument_exits_2(capsys):
    from experiments import common, debias_table

    assert common.run_cli(debias_table.main, ["--methods", "nope", "--quick"]) == 2
    assert "nope" in capsys.readouterr().err


def test_discovery_attribution_head_vs_shared_matrix():
    from _methods_data import dataset

    from gradtune_jax.methods.erm import init_state
    from gradtune_jax.trak import compute_scores
    from gradtune_jax.train.recipe import Recipe

    ds = dataset(0, image=True)
    state = init_state(ds, Recipe(model="tiny_cnn", epochs=1), seed=0)
    cfg = debias.TrakConfig(proj_dim=None, lambda_reg=1e-3, wrt="params", discovery_wrt=("params", "head"))
    tau = debias.val_attribution([state], ds.train, ds.val, cfg, 0, progress=False)
    disc = debias.discovery_attribution([state], ds.train, ds.val, cfg, 0, tau, progress=False)
    want = compute_scores(debias.model_apply(state), [debias.variables(state)], (ds.train.x, ds.train.y),
                          (ds.val.x, ds.val.y), proj_dim=None, lambda_reg=1e-3, wrt=("params", "head"),
                          progress=False)
    np.testing.assert_allclose(disc, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(disc, tau, rtol=1e-2)
    # the same parameters, spelled differently: the alignment matrix is reused, not recomputed
    same = dataclasses.replace(cfg, discovery_wrt=("params",))
    assert debias.discovery_attribution([state], ds.train, ds.val, same, 0, tau) is tau
    assert debias.discovery_attribution([state], ds.train, ds.val, dataclasses.replace(cfg, discovery_wrt=None),
                                        0, tau) is tau


def test_debias_table_reports_the_group_labels_each_row_actually_read():
    from experiments import debias_table

    m = {"metrics": {"bal_acc": 0.5, "wga": 0.25}}
    per_seed = {"0": {"rows": {"erm": m, "jtt": {**m, "selection": "worst-class"},
                               "rwg": {**m, "selection": "oracle"}, "dfr": {**m, "selection": "worst-class"}}},
                "1": {"rows": {"erm": m, "jtt": {**m, "selection": "oracle"},
                               "rwg": {**m, "selection": "oracle"}, "dfr": {**m, "selection": "worst-class"}}}}
    _, summary, md = debias_table.summarise(per_seed, "toy", ["erm", "jtt", "rwg", "dfr"])
    got = {s["method"]: (s["group_labels"], s["selection"]) for s in summary}
    assert got == {"erm": ("no/no", "fixed"), "jtt": ("no/no, no/yes", "oracle, worst-class"),
                   "rwg": ("yes/yes", "oracle"), "dfr": ("no/yes", "worst-class")}
    assert [c.strip() for c in md.splitlines()[0].split("|")[1:-1]] == [
        "Method", "Group labels train/val", "Selection", "Balanced acc", "WGA"]
