"""Defining mechanics of the last-layer baselines: DFR, AFR, SELF, CB-LLR."""
from __future__ import annotations

import numpy as np
from _methods_data import feature_set
from sklearn.preprocessing import StandardScaler

from gradtune_jax.methods.afr import AFRConfig, afr, afr_weights
from gradtune_jax.methods.cb_llr import cb_llr
from gradtune_jax.methods.dfr import DFRConfig, dfr, group_balanced_subsample, l1_logistic_regression, to_head
from gradtune_jax.methods.features import evaluate_head, head_logits
from gradtune_jax.methods.self_ft import self_scores, top_m
from gradtune_jax.train.last_layer import HeadConfig


def test_dfr_subsample_is_group_balanced():
    g = np.repeat([0, 1, 2, 3], [50, 7, 3, 20])
    idx = group_balanced_subsample(g, np.random.default_rng(0))
    assert len(np.unique(idx)) == len(idx)  # without replacement
    np.testing.assert_array_equal(np.bincount(g[idx]), [3, 3, 3, 3])


def test_dfr_head_folds_the_scaler_and_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (80, 5))
    y = (x[:, 0] + 0.3 * rng.normal(size=80) > 3).astype(int)
    scaler = StandardScaler().fit(x)
    lr = l1_logistic_regression(1.0, 0).fit(scaler.transform(x), y)
    head = to_head(lr.coef_, lr.intercept_, scaler, 2)
    logits = head_logits(head, x)
    p1 = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    np.testing.assert_allclose(p1, lr.predict_proba(scaler.transform(x))[:, 1], atol=1e-5)


def test_dfr_beats_the_spurious_erm_head_on_wga():
    fs = feature_set()
    head, info = dfr(fs.D, fs.val_select, DFRConfig(cs=(1.0, 0.1), n_refits=3), 0, "oracle")
    assert info["subsample_size"] == 4 * np.bincount(fs.D.g).min()
    assert evaluate_head(head, fs.ds.test)["wga"] > evaluate_head(fs.head, fs.ds.test)["wga"]


def test_afr_weights_fall_with_p_y():
    p = np.array([0.1, 0.5, 0.9, 0.2, 0.8])
    y = np.array([0, 0, 0, 1, 1])
    w = afr_weights(p, y, gamma=4.0, class_balance=False)
    assert np.isclose(w.sum(), 1.0) and w[0] > w[1] > w[2] and w[3] > w[4]
    wb = afr_weights(p, y, gamma=4.0, class_balance=True)
    np.testing.assert_allclose([wb[y == 0].sum(), wb[y == 1].sum()], [0.5, 0.5])
    np.testing.assert_allclose(afr_weights(p, y, 0.0, False), np.full(5, 0.2))


def test_afr_l2_pull_keeps_the_erm_head():
    fs = feature_set()
    cfg = AFRConfig(gamma=4.0, lam=1e4, steps=50)
    head, _ = afr(fs.head, fs.D, fs.val_select, cfg, "fixed")
    np.testing.assert_allclose(head["kernel"], fs.head["kernel"], atol=1e-2)
    free, _ = afr(fs.head, fs.D, fs.val_select, AFRConfig(gamma=4.0, lam=0.0, steps=200), "fixed")
    assert evaluate_head(free, fs.ds.test)["wga"] > evaluate_head(fs.head, fs.ds.test)["wga"]


def test_self_scores_and_top_m():
    final = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    early = np.array([[2.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    kl = self_scores(final, np.array([0, 1, 0]), "es_disagreement", early)
    assert np.isclose(kl[0], 0) and np.isclose(kl[2], 0) and kl[1] > 0
    mis = self_scores(final, np.array([1, 1, 0]), "misclassification")
    assert mis[0] > mis[2] > mis[1]  # misclassified first, then by loss
    np.testing.assert_array_equal(top_m(np.array([0.1, 0.9, 0.5, 0.7]), 2), [1, 3])


def test_cb_llr_retrains_a_reset_head_on_all_of_d():
    fs = feature_set()
    cfg = HeadConfig(epochs=1, batch_size=8, optim=HeadConfig().optim.__class__("sgd", 0.0, 0.0))
    head = cb_llr(fs, cfg, 0)  # lr 0: the result is the fresh head, not the ERM one
    assert not np.allclose(head["kernel"], fs.head["kernel"])
    np.testing.assert_allclose(head["bias"], 0.0)
