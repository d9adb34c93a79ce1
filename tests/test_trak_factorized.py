"""Factorized (per-layer Kronecker) projection: exact in identity mode, unbiased inner products,
scores as close to exact TRAK as the dense projection's."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from gradtune_jax.kernels.per_example import flat_per_example_grads_jit
from gradtune_jax.trak import compute_scores, margin
from gradtune_jax.trak.factorized import make_factorized_featurizer, split_dims


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (3, 3), strides=2, padding=((1, 1), (1, 1)))(x)
        h = nn.relu(nn.LayerNorm()(h))
        h = nn.Conv(5, (3, 3), padding="SAME", use_bias=False)(h)
        h = nn.tanh(nn.Dense(6)(h.mean((1, 2))))
        return nn.Dense(3, name="head")(h)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(16)(x))
        h = nn.tanh(nn.Dense(16)(h))
        return nn.Dense(4, name="head")(h)


class TinyText(nn.Module):
    @nn.compact
    def __call__(self, ids):
        h = nn.Embed(11, 6)(ids)
        return nn.Dense(3, name="head")(jnp.tanh(nn.Dense(5)(h)).mean(1))


def setup(model: nn.Module, x: np.ndarray, seed: int = 0):
    v = model.init(jax.random.key(seed), x[:1])
    return (lambda v, x: model.apply(v, x)), v


def exact_grads(app, v, x, y, wrt="params") -> np.ndarray:
    def em(p, xi, yi):
        return margin(app(p, xi[None])[0], yi)
    return np.asarray(flat_per_example_grads_jit(em, v, x, y, wrt), np.float64)


@pytest.mark.parametrize("which", ["cnn", "text"])
def test_identity_projection_is_the_exact_gradient(which):
    rng = np.random.default_rng(0)
    if which == "cnn":
        model, x = TinyCNN(), rng.normal(size=(7, 8, 8, 2)).astype(np.float32)
    else:
        model, x = TinyText(), rng.integers(0, 11, size=(7, 5)).astype(np.int32)
    y = rng.integers(0, 3, 7)
    app, v = setup(model, x)
    fn = make_factorized_featurizer(app, v, jax.random.key(0), wrt="params", identity=True)
    phi, q = fn(x, y)
    kinds = {lay.kind for lay in fn.state["layers"]}
    assert kinds == ({"conv", "dense"} if which == "cnn" else {"embed", "dense"})
    g = exact_grads(app, v, x, y)
    assert phi.shape == g.shape
    np.testing.assert_allclose(phi.astype(np.float64) @ phi.T, g @ g.T, rtol=1e-4, atol=1e-5 * np.abs(g @ g.T).max())
    # the head only: one factored layer (its kernel) + its bias
    fn_h = make_factorized_featurizer(app, v, jax.random.key(0), wrt=("params", "head"), identity=True)
    phi_h, _ = fn_h(x, y)
    g_h = exact_grads(app, v, x, y, ("params", "head"))
    assert [lay.name for lay in fn_h.state["layers"]] == ["head"]
    np.testing.assert_allclose(phi_h @ phi_h.T, g_h @ g_h.T, rtol=1e-4, atol=1e-6 * np.abs(g_h @ g_h.T).max())


def test_inner_products_unbiased():
    """Mean over 300 projections of <phi_a, phi_b> = (k / n_params) <g_a, g_b> (JL, unbiased)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 8, 8, 2)).astype(np.float32), rng.integers(0, 3, 6)
    app, v = setup(TinyCNN(), x)
    k = 64
    fn = make_factorized_featurizer(app, v, jax.random.key(0), wrt="params", proj_dim=k)
    phi, _ = fn(x, y)
    assert phi.shape == (6, k)
    st = fn.state
    g = exact_grads(app, v, x, y)
    target = k / g.shape[1] * (g @ g.T)
    acc, n_draws = np.zeros((6, 6)), 300
    for i in range(n_draws):
        key = jax.random.key(1000 + i)
        projs = [(jax.random.normal(jax.random.fold_in(key, 2 * j), p_in.shape),
                  jax.random.normal(jax.random.fold_in(key, 2 * j + 1), p_out.shape))
                 for j, (p_in, p_out) in enumerate(st["projs"])]
        p_small = jax.random.normal(jax.random.fold_in(key, 9999), st["p_small"].shape)
        phi_i, _ = st["fn"](v, projs, p_small, x, y.astype(np.int32))
        acc += np.asarray(phi_i, np.float64) @ np.asarray(phi_i, np.float64).T
    mean = acc / n_draws
    rel = np.linalg.norm(mean - target) / np.linalg.norm(target)
    single = np.linalg.norm(np.asarray(phi, np.float64) @ phi.T - target) / np.linalg.norm(target)
    assert rel < 0.1 and rel < single / 3  # the average converges; one draw is much noisier


def test_split_dims_sum_to_k():
    from gradtune_jax.trak.factorized import Layer
    layers = [Layer("a", ("params", "a", "kernel"), "dense", 100, 50), Layer("b", ("params", "b", "kernel"), "dense", 3, 2)]
    for n_small in (0, 10, 40, 1000):
        out, k_small = split_dims(layers, n_small, 90)
        assert k_small <= n_small and all(lay.k_in <= lay.d_in and lay.k_out <= lay.d_out for lay in out)
        used = sum(lay.k_in * lay.k_out for lay in out) + k_small
        assert 90 - max(max(lay.k_in, lay.k_out) for lay in out) < used <= 90  # the rest: zero columns
    out, k_small = split_dims(layers, 1000, 90)
    assert [(lay.k_in, lay.k_out) for lay in out] == [(5, 6), (3, 2)] and k_small == 54
    with pytest.raises(ValueError, match="proj_dim"):
        split_dims(layers * 3, 0, 4)


def mean_spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([spearmanr(a[:, t], b[:, t]).statistic for t in range(a.shape[1])]))


def test_scores_spearman_vs_exact_close_to_dense():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(330, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4))
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(330, 4)), 1)
    app, v = setup(MLP(), x)
    train, targets = (x[:300], y[:300]), (x[300:], y[300:])
    kw = dict(lambda_reg=1e-2, wrt="params", batch_size=128, progress=False)
    exact = compute_scores(app, [v], train, targets, proj_dim=None, **kw)
    dense, fact = [], []
    for seed in range(3):
        dense.append(mean_spearman(compute_scores(app, [v], train, targets, proj_dim=128, seed=seed, **kw), exact))
        f, info = compute_scores(app, [v], train, targets, proj_dim=128, seed=seed, proj_type="factorized",
                                 return_info=True, **kw)
        assert info["kernel"][0]["k"] == 128
        fact.append(mean_spearman(f, exact))
    assert np.mean(fact) >= np.mean(dense) - 0.1, (fact, dense)
    assert np.mean(fact) > 0.3
