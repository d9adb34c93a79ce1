import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtune_jax.kernels import (gradtune_select, last_layer_grad_norms, last_layer_grad_norms_closed_form,
                                  random_select)


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_grad_norms_match_closed_form(n_classes):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(n_classes), 4)
    head = {"kernel": jax.random.normal(k1, (16, n_classes)), "bias": jax.random.normal(k2, (n_classes,))}
    feats = 2.0 * jax.random.normal(k3, (50, 16))
    y = jax.random.randint(k4, (50,), 0, n_classes)
    got = last_layer_grad_norms(head, feats, y)
    p = jax.nn.softmax(feats @ head["kernel"] + head["bias"])
    want = jnp.linalg.norm(p - jax.nn.one_hot(y, n_classes), axis=1) * jnp.sqrt(jnp.sum(feats**2, 1) + 1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(last_layer_grad_norms_closed_form(head, feats, y), want, rtol=1e-5)


def test_grad_norms_single_example_by_hand():
    head = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    # p = (0.5, 0.5); ||p - e_0|| = sqrt(0.5); ||h||^2 + 1 = 9 + 16 + 1
    got = last_layer_grad_norms(head, jnp.array([[3.0, 4.0]]), jnp.array([0]))
    np.testing.assert_allclose(got, [np.sqrt(0.5) * np.sqrt(26.0)], rtol=1e-6)


def test_gradtune_select_size_unique_topk():
    norms = np.random.default_rng(0).exponential(size=1000)
    idx = gradtune_select(norms, k=400, size=500, seed=3)
    assert len(idx) == 500 and len(np.unique(idx)) == 500
    top = np.argsort(-norms)[:400]
    assert set(top) <= set(idx)
    np.testing.assert_array_equal(idx, gradtune_select(norms, 400, 500, 3))
    assert not np.array_equal(idx, gradtune_select(norms, 400, 500, 4))


def test_gradtune_select_sampled_part_is_norm_proportional():
    # 10 top items dominate; the rest has two tiers whose inclusion rate must follow the norm.
    norms = np.concatenate([np.full(10, 100.0), np.full(200, 1.0), np.full(200, 3.0)])
    hits = np.zeros(len(norms))
    for s in range(400):
        hits[gradtune_select(norms, k=10, size=30, seed=s)] += 1
    assert np.all(hits[:10] == 400)
    low, high = hits[10:210].mean(), hits[210:].mean()
    # drawing 20 of 400 without replacement with weights 1:3 -> inclusion rates close to 1:3
    assert 2.4 < high / low < 3.6


def test_gradtune_select_small_pool_and_errors():
    np.testing.assert_array_equal(gradtune_select(np.ones(7), 4, 10, 0), np.arange(7))
    with pytest.raises(ValueError):
        gradtune_select(np.ones(10), 6, 5, 0)
    with pytest.raises(ValueError):
        gradtune_select(np.array([1.0, np.nan, 2.0]), 1, 2, 0)
    idx = gradtune_select(np.array([5.0, 0, 0, 0, 0, 0]), 1, 3, 0)  # zero-norm rest still fills the set
    assert len(np.unique(idx)) == 3 and 0 in idx


def test_random_select():
    idx = random_select(100, 20, seed=1)
    assert len(np.unique(idx)) == 20 and idx.min() >= 0 and idx.max() < 100
    np.testing.assert_array_equal(idx, random_select(100, 20, seed=1))
    np.testing.assert_array_equal(random_select(5, 20, 0), np.arange(5))
