"""Rank-safe TRAK kernel: a rank-deficient head (k > rank) against a float64 pseudo-inverse."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtune_jax.kernels.per_example import flat_per_example_grads_jit
from gradtune_jax.trak import compute_scores, margin
from gradtune_jax.trak.kernels import gram64, kernel_inverse, kernel_inverse_info

D, H, C = 6, 16, 2  # binary head: 2 * H + 2 = 34 parameters, margin gradients of rank <= H + 1 = 17


def apply(p, x):
    return jnp.tanh(x @ p["body"]["kernel"]) @ p["head"]["kernel"] + p["head"]["bias"]


def example_margin(p, xi, yi):
    return margin(apply(p, xi[None])[0], yi)


def setup(seed: int = 0, n: int = 200, t: int = 20):
    rng = np.random.default_rng(seed)
    p = {"body": {"kernel": rng.normal(size=(D, H)).astype(np.float32)},
         "head": {"kernel": rng.normal(size=(H, C)).astype(np.float32), "bias": rng.normal(size=C).astype(np.float32)}}
    x = rng.normal(size=(n + t, D)).astype(np.float32)
    y = rng.integers(0, C, n + t)
    return p, (x[:n], y[:n]), (x[n:], y[n:])


def pinv_reference(p, train, targets) -> np.ndarray:
    """Exact (unprojected) head-TRAK in float64 with an SVD pseudo-inverse: `G (G^T G)^+ G_t^T * Q`."""
    g = np.asarray(flat_per_example_grads_jit(example_margin, p, *train, "head"), np.float64)
    gt = np.asarray(flat_per_example_grads_jit(example_margin, p, *targets, "head"), np.float64)
    prob = np.asarray(jax.nn.softmax(apply(p, train[0])), np.float64)[np.arange(len(train[1])), train[1]]
    return g @ np.linalg.pinv(g.T @ g, rcond=1e-10, hermitian=True) @ gt.T * (1 - prob)[:, None]


def mean_pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])]))


@pytest.mark.parametrize("proj_dim", [24, 64])
def test_rank_deficient_head_matches_pinv_reference(proj_dim):
    p, train, targets = setup()
    ref = pinv_reference(p, train, targets)
    got, info = compute_scores(apply, [p], train, targets, proj_dim=proj_dim, wrt="head", seed=1,
                               progress=False, return_info=True)
    (kinfo,) = info["kernel"]
    assert kinfo["k"] == proj_dim and kinfo["rank"] == H + 1 and kinfo["method"] == "pinv"
    assert kinfo["condition_number"] > 1e8
    assert mean_pearson(np.asarray(got), ref) >= 0.9
    # the old behaviour (plain inverse) refuses instead of returning scores from a singular matrix
    with pytest.raises(np.linalg.LinAlgError):
        compute_scores(apply, [p], train, targets, proj_dim=proj_dim, wrt="head", seed=1, progress=False,
                       kernel_method="inverse")


def test_plain_inverse_of_singular_gram_is_what_broke():
    """What `np.linalg.inv` returned before: scores unrelated to the reference (documents the bug)."""
    p, train, targets = setup()
    ref = pinv_reference(p, train, targets)
    from gradtune_jax.trak.kernels import featurize
    x, q = featurize(apply, p, train[0], train[1], jax.random.key(5), wrt="head", proj_dim=64)
    phi, _ = featurize(apply, p, targets[0], targets[1], jax.random.key(5), wrt="head", proj_dim=64)
    x, phi = np.asarray(x, np.float64), np.asarray(phi, np.float64)
    old = x @ np.linalg.inv(gram64(x)) @ phi.T * np.asarray(q)[:, None]
    new = x @ kernel_inverse(gram64(x)).astype(np.float64) @ phi.T * np.asarray(q)[:, None]
    assert mean_pearson(new, ref) > 0.99
    assert mean_pearson(old, ref) < 0.9


def test_full_rank_unchanged_and_report():
    x = np.random.default_rng(0).normal(size=(50, 8))
    xtx = x.T @ x
    inv, info = kernel_inverse_info(xtx, 0.0)
    ref = np.linalg.inv(xtx)
    np.testing.assert_allclose(inv, ref / np.abs(ref).mean(), rtol=1e-5)
    assert info["method"] == "inverse" and info["rank"] == 8 and info["k"] == 8
    np.testing.assert_allclose(info["condition_number"], np.linalg.cond(xtx), rtol=1e-6)
    # "pinv" on a full-rank matrix is the inverse; a ridge makes a singular matrix full rank
    np.testing.assert_allclose(kernel_inverse(xtx, method="pinv"), inv, rtol=1e-5)
    low = x[:, :3] @ np.random.default_rng(1).normal(size=(3, 8))
    assert kernel_inverse_info(low.T @ low)[1]["rank"] == 3
    assert kernel_inverse_info(low.T @ low, 1.0)[1]["method"] == "inverse"
    # ill-conditioned but full rank (condition 1e8): inverted, not truncated
    scaled = x * np.logspace(0, -4, 8)
    assert kernel_inverse_info(scaled.T @ scaled)[1]["rank"] == 8
    # the cut follows the trace of X^T X, not the number of rows: 10x the rows, 10x the cut
    tall = np.concatenate([x] * 10)
    t1, t10 = kernel_inverse_info(xtx)[1]["tolerance"], kernel_inverse_info(tall.T @ tall)[1]["tolerance"]
    np.testing.assert_allclose(t10, 10 * t1, rtol=1e-9)
    with pytest.raises(ValueError):
        kernel_inverse(xtx, method="bogus")
    zero = kernel_inverse_info(np.zeros((4, 4)))
    assert zero[1]["rank"] == 0 and not np.any(zero[0])


def test_string_wrt_differentiates_that_subtree_only():
    """`wrt="head"` used to be dropped by `featurize_dataset` (all parameters differentiated)."""
    from gradtune_jax.trak.scores import featurize_dataset
    p, train, _ = setup(n=30)
    key = jax.random.key(0)
    x_str, _ = featurize_dataset(apply, p, train, key, wrt="head", proj_dim=None, progress=False)
    x_tup, _ = featurize_dataset(apply, p, train, key, wrt=("head",), proj_dim=None, progress=False)
    assert x_str.shape == (30, 2 * H + 2)
    np.testing.assert_array_equal(x_str, x_tup)
