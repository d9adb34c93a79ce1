"""Defining mechanics of the retraining baselines: JTT, GroupDRO, RWG, SUBG, uLA's pieces."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _methods_data import dataset

from gradtune_jax.data.samplers import epoch_indices
from gradtune_jax.methods import group_dro as group_dro_mod
from gradtune_jax.methods import jtt as jtt_mod
from gradtune_jax.methods import reweight as reweight_mod
from gradtune_jax.methods.group_dro import GroupDROConfig, group_dro
from gradtune_jax.methods.jtt import JTTConfig, error_set, jtt, upsample_weights
from gradtune_jax.methods.reweight import ReweightConfig, rwg, subg, subg_indices
from gradtune_jax.methods.selection import GroupLabelError, hide_groups
from gradtune_jax.methods import ula as ula_mod
from gradtune_jax.methods.ula import ULAConfig, augment, group_prior, la_loss, logit_adjustment, nt_xent, with_backbone
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.train.state import zeros_like_extra
from gradtune_jax.train.steps import group_dro_loss

TINY = Recipe(model="tiny_cnn", epochs=2, batch_size=16, checkpoint_every=0, eval_batch_size=64)


def test_jtt_error_set_and_weights_mark_exactly_the_misclassified():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0], [0.0, 5.0]])
    y = np.array([0, 0, 1, 1])
    err = error_set(logits, y)
    np.testing.assert_array_equal(err, [False, True, True, False])
    np.testing.assert_array_equal(upsample_weights(err, 50), [1, 50, 50, 1])


def test_jtt_retrains_with_the_early_models_errors_upsampled(monkeypatch):
    ds = dataset(image=True)
    logits = np.zeros((len(ds.train), 2))
    logits[np.arange(len(ds.train)), ds.train.y] = 1.0
    wrong = np.array([3, 10, 70])
    logits[wrong] = logits[wrong][:, ::-1]
    monkeypatch.setattr(jtt_mod, "early_logits", lambda *a, **k: {"train": logits})
    seen = {}

    def fake_train_selected(ds_, cfg, seed, *, weights, **kw):
        seen.update(weights=weights, sampler=cfg.sampler)
        return "state", {"epoch": 1, "epoch_scores": [], "recipe": cfg.describe()}

    monkeypatch.setattr(jtt_mod, "train_selected", fake_train_selected)
    _, info = jtt(ds, TINY, JTTConfig(id_epochs=1, lambda_up=20.0), 0, ds.val, "fixed")
    assert info["n_errors"] == 3 and seen["sampler"] == "weighted"
    np.testing.assert_array_equal(np.flatnonzero(seen["weights"] == 20.0), wrong)
    assert np.all(np.delete(seen["weights"], wrong) == 1.0)


def test_group_dro_weights_rise_on_the_high_loss_group():
    logits = jnp.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    batch = {"y": jnp.array([0, 0, 0, 0]), "g": jnp.array([0, 0, 1, 1]), "w": jnp.ones(4)}
    extra = zeros_like_extra(2)
    for _ in range(3):
        _, extra = group_dro_loss(0.1)(logits, batch, extra)
    q = np.asarray(extra["q"])
    assert q[1] > 0.5 > q[0] and np.isclose(q.sum(), 1.0)


def test_rwg_sampler_balances_groups():
    g = dataset().train.g
    idx = epoch_indices(g, len(g), 40000, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(g[idx]) / len(idx), 0.25, atol=0.01)


def test_subg_subset_is_exactly_group_balanced():
    g = dataset().train.g
    idx = subg_indices(g, 0)
    np.testing.assert_array_equal(np.bincount(g[idx]), [4, 4, 4, 4])
    assert len(np.unique(idx)) == len(idx)


def test_retraining_methods_run_and_select_epochs(monkeypatch):
    ds = dataset(image=True)
    state, info = group_dro(ds, TINY, GroupDROConfig(), 0, ds.val, "oracle")
    assert len(info["epoch_scores"]) == 2 and np.isclose(sum(info["q"]), 1.0)
    seen = []
    monkeypatch.setattr(reweight_mod, "train_selected", lambda ds_, cfg, seed, **kw: seen.append((cfg, kw)) or (0, {}))
    rwg(ds, TINY, ReweightConfig(), 0, ds.val, "fixed")
    subg(ds, TINY, ReweightConfig(), 0, ds.val, "fixed")
    assert seen[0][0].sampler == "group_balanced"
    sub = seen[1][1]["train"]
    np.testing.assert_array_equal(np.bincount(sub.g), [4, 4, 4, 4])
    assert seen[1][0].epochs == round(2 * 7 / 1)  # steps matched: 7 steps/epoch vs 1


def test_group_free_retraining_cannot_read_val_groups():
    ds = dataset(image=True)
    with pytest.raises(GroupLabelError):  # oracle selection on hidden groups fails before training
        group_dro_mod.group_dro(ds, TINY, GroupDROConfig(), 0, hide_groups(ds.val), "oracle")


def test_ula_pieces():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 4)).astype(np.float32)
    assert float(nt_xent(z, z, 0.5)) < float(nt_xent(z, z[::-1], 0.5))
    x = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
    assert augment(x, rng).shape == x.shape
    prior = group_prior(np.array([0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 0]), 2)
    assert np.isclose(prior.sum(), 1.0) and prior[0, 0] > prior[0, 1]
    off = logit_adjustment(prior, np.array([0, 1]), 1.0)
    np.testing.assert_allclose(off, np.log(prior[:, [0, 1]].T))


def test_ula_logit_adjusted_loss_adds_the_proxy_rows():
    import optax

    logits = jnp.array([[1.0, -1.0], [0.5, 0.2], [0.0, 2.0]])
    y, b = np.array([0, 1, 1]), np.array([1, 0, 1])
    off = np.log(np.array([[0.6, 0.1], [0.05, 0.25]]))  # row b, column y
    batch = {"y": jnp.asarray(y), "g": jnp.asarray(y * 2 + b), "w": jnp.ones(3)}
    loss, _ = la_loss(logits, batch, {"offset_BC": jnp.asarray(off)})
    want = optax.softmax_cross_entropy_with_integer_labels(logits + off[b], jnp.asarray(y)).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    plain, _ = la_loss(logits, batch, {"offset_BC": jnp.zeros((2, 2))})
    assert float(plain) != pytest.approx(float(loss))


def test_ula_finetune_starts_from_the_ssl_backbone_with_a_fresh_head():
    from gradtune_jax.methods.erm import init_state

    ds = dataset(image=True)
    ssl, _ = ula_mod.simclr(ds, TINY, ULAConfig(ssl_epochs=1, ssl_batch_size=32, proj_dim=16), 0)
    st = init_state(ds, TINY, 0, init_fn=with_backbone(ssl, ds.train.x[:2]))
    assert st.params["head"]["kernel"].shape[-1] == ds.n_classes
    for k in ssl.params:
        if k != "head":
            for a, b in zip(jax.tree.leaves(ssl.params[k]), jax.tree.leaves(st.params[k])):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("regime,criterion", [("worst-class", "bias-unsupervised"), ("fixed", "fixed"),
                                              ("oracle", "oracle")])
def test_ula_finetune_end_to_end_and_its_criterion(regime, criterion):
    ds = dataset(image=True)
    sel = np.arange(0, len(ds.val), 2)
    val = ds.val if regime == "oracle" else hide_groups(ds.val)
    cfg = ULAConfig(ssl_epochs=1, ssl_batch_size=32, proj_dim=16, proxy_steps=5, epochs=2, tau_grid=(1.0,))
    pred, info = ula_mod.ula(dataclasses.replace(ds, train=hide_groups(ds.train), val=val), TINY, cfg, 0, sel, regime)
    assert pred.shape == ds.test.y.shape and set(np.unique(pred)) <= {0, 1}
    assert info["criterion"] == criterion and info["train_mode"] == "finetune"
    assert info["epoch"] == 2 if regime == "fixed" else 1 <= info["epoch"] <= 2
    assert len(info["epoch_scores"]) == (0 if regime == "fixed" else 2)
