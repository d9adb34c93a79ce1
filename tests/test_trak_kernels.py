"""TRAK kernels against brute-force numpy: margin, per-example gradients, projection, scores."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtune_jax.kernels.per_example import flat_per_example_grads_jit, num_params, per_example_grads
from gradtune_jax.trak import compute_scores, kernel_inverse, margin, materialize_projection, project
from gradtune_jax.trak.kernels import featurize

C, D = 3, 4


def linear_apply(p, x):
    return x @ p["head"]["kernel"] + p["head"]["bias"]


def mlp_apply(p, x):
    return linear_apply(p, jnp.tanh(x @ p["body"]["kernel"]))


def mlp_margin(params, xi, yi):
    return margin(mlp_apply(params, xi[None])[0], yi)


def make_params(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"body": {"kernel": rng.normal(size=(D, D)).astype(np.float32)},
            "head": {"kernel": rng.normal(size=(D, C)).astype(np.float32),
                     "bias": rng.normal(size=C).astype(np.float32)}}


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, C, n)


def numpy_linear_margin_grads(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Closed form: d margin / d logits = onehot(y) - softmax over the other classes."""
    z = x @ p["head"]["kernel"] + p["head"]["bias"]
    e = np.exp(z - z.max(1, keepdims=True))
    e[np.arange(len(y)), y] = 0.0
    dz = -e / e.sum(1, keepdims=True)
    dz[np.arange(len(y)), y] = 1.0
    gb, gw = dz, x[:, :, None] * dz[:, None, :]
    return np.concatenate([gb, gw.reshape(len(y), -1)], axis=1)  # leaves order: bias, kernel


def numpy_scores(feats_train: list, feats_target: list, qs: list, lam: float) -> np.ndarray:
    acc = 0.0
    for x, phi in zip(feats_train, feats_target):
        k = np.linalg.inv(x.T.astype(np.float64) @ x + lam * np.eye(x.shape[1]))
        acc = acc + x @ (k / np.abs(k).mean()) @ phi.T
    return acc / len(feats_train) * np.mean(qs, axis=0)[:, None]


def test_margin_is_log_odds():
    z = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.3, 3.0]])
    y = jnp.array([0, 2])
    p = jax.nn.softmax(z)[jnp.arange(2), y]
    np.testing.assert_allclose(margin(z, y), np.log(p / (1 - p)), rtol=1e-5)


def test_per_example_grads_match_closed_form_and_subset():
    p, (x, y) = make_params(0), make_data(7, 1)

    def fn(params, xi, yi):
        return margin(linear_apply(params, xi[None])[0], yi)

    head = flat_per_example_grads_jit(fn, p, x, y, "head")
    np.testing.assert_allclose(head, numpy_linear_margin_grads(p, x, y), rtol=1e-5, atol=1e-6)
    full = per_example_grads(fn, p, x, y)
    assert set(full) == {"body", "head"}
    np.testing.assert_allclose(full["head"]["kernel"], per_example_grads(fn, p, x, y, ("head",))["kernel"])
    assert num_params(p, "head") == D * C + C and num_params(p) == D * D + D * C + C


@pytest.mark.parametrize("proj_type", ["normal", "rademacher"])
def test_blockwise_projection_equals_materialised(proj_type):
    g = np.random.default_rng(0).normal(size=(5, 1000)).astype(np.float32)
    key = jax.random.key(3)
    out = project(jnp.asarray(g), key, 16, proj_type, 96)  # 11 blocks, last one partial
    mat = np.asarray(materialize_projection(1000, key, 16, proj_type, 96))
    np.testing.assert_allclose(out, g @ mat, rtol=1e-4, atol=1e-4)
    if proj_type == "rademacher":
        assert set(np.unique(mat)) == {-1.0, 1.0}
    else:
        assert abs(mat.mean()) < 0.05 and abs(mat.std() - 1.0) < 0.05


def test_projection_memory_does_not_grow_with_n_params():
    """Compiled temporary memory stays far below the (n_params x k) matrix it never builds."""
    k, block = 512, 256
    temps = {}
    for p in (20_000, 200_000):
        g = jax.ShapeDtypeStruct((2, p), jnp.float32)
        fn = jax.jit(lambda g, key: project(g, key, k, "normal", block))
        mem = fn.lower(g, jax.random.key(0)).compile().memory_analysis()
        temps[p] = mem.temp_size_in_bytes
    full_matrix = 200_000 * k * 4
    assert temps[200_000] < full_matrix / 50
    # growth from 10x more params is the padded input copy (2 x p floats), not p x k
    assert temps[200_000] - temps[20_000] < 4 * 2 * 200_000 * 2


def test_kernel_inverse_normalised():
    x = np.random.default_rng(0).normal(size=(30, 6))
    k = kernel_inverse(x.T @ x, 0.1)
    assert abs(np.abs(k).mean() - 1.0) < 1e-5
    ref = np.linalg.inv(x.T @ x + 0.1 * np.eye(6))
    np.testing.assert_allclose(k, ref / np.abs(ref).mean(), rtol=1e-5)


def test_scores_match_numpy_exact_and_projected():
    cks = [make_params(0), make_params(1)]
    train, targets = make_data(23, 2), make_data(5, 3)
    lam = 1e-2
    n_p = num_params(cks[0])
    for proj_dim, cache in ((None, None), (8, False), (8, True)):
        got = compute_scores(mlp_apply, cks, train, targets, proj_dim=proj_dim, lambda_reg=lam, seed=4,
                             batch_size=10, cache_projection=cache, progress=False)
        feats_tr, feats_t, qs = [], [], []
        for m, p in enumerate(cks):
            key = jax.random.fold_in(jax.random.key(4), m)
            gtr = np.asarray(flat_per_example_grads_jit(mlp_margin, p, *train, None))
            gt = np.asarray(flat_per_example_grads_jit(mlp_margin, p, *targets, None))
            if proj_dim is not None:
                mat = np.asarray(materialize_projection(n_p, key, proj_dim))
                gtr, gt = gtr @ mat, gt @ mat
            feats_tr.append(gtr / np.sqrt(n_p))
            feats_t.append(gt / np.sqrt(n_p))
            z = mlp_apply(p, train[0])
            qs.append(1 - np.asarray(jax.nn.softmax(z))[np.arange(23), train[1]])
        ref = numpy_scores(feats_tr, feats_t, qs, lam)
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())


def test_scores_out_memmap_and_head_subset(tmp_path):
    cks = [make_params(0)]
    train, targets = make_data(12, 5), make_data(3, 6)
    mem = compute_scores(mlp_apply, cks, train, targets, proj_dim=None, lambda_reg=0.1, progress=False,
                         wrt="head")
    path = str(tmp_path / "scores.npy")
    disk = compute_scores(mlp_apply, cks, train, targets, proj_dim=None, lambda_reg=0.1, progress=False,
                          wrt="head", out=path, score_rows=5)
    np.testing.assert_allclose(np.load(path), mem, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(disk, mem, rtol=1e-4, atol=1e-7)
    phi, _ = featurize(mlp_apply, cks[0], train[0], train[1], jax.random.key(0), wrt="head", proj_dim=None)
    assert phi.shape == (12, D * C + C)


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from tests.test_trak_kernels import make_params, make_data, mlp_apply
    from gradtune_jax.kernels.per_example import data_mesh
    from gradtune_jax.trak import compute_scores
    assert jax.device_count() == 4
    s = compute_scores(mlp_apply, [make_params(0), make_params(1)], make_data(22, 2), make_data(5, 3),
                       proj_dim=8, lambda_reg=1e-2, seed=1, batch_size=8, mesh=data_mesh(), progress=False)
    s2 = compute_scores(mlp_apply, [make_params(0)], make_data(22, 2), make_data(5, 3), proj_dim=8,
                        lambda_reg=1e-2, seed=1, batch_size=8, mesh=data_mesh(), cache_projection=False,
                        progress=False)
    np.save(OUT.replace(".npy", "_nocache.npy"), s2)
    np.save(OUT, s)
""")


def test_sharded_featurisation_matches_single_device(tmp_path):
    out = str(tmp_path / "sharded.npy")
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", f"OUT = {out!r}\n" + SHARDED], check=True, cwd=root, env=env)
    single = compute_scores(mlp_apply, [make_params(0), make_params(1)], make_data(22, 2), make_data(5, 3),
                            proj_dim=8, lambda_reg=1e-2, seed=1, batch_size=8, progress=False)
    np.testing.assert_allclose(np.load(out), single, rtol=1e-4, atol=1e-6 * np.abs(single).max())
    single1 = compute_scores(mlp_apply, [make_params(0)], make_data(22, 2), make_data(5, 3), proj_dim=8,
                             lambda_reg=1e-2, seed=1, batch_size=8, progress=False)
    np.testing.assert_allclose(np.load(out.replace(".npy", "_nocache.npy")), single1, rtol=1e-4,
                               atol=1e-6 * np.abs(single1).max())
