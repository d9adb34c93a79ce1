import numpy as np

from gradtune_jax.data import balanced_indices, heldout_split, make_digits_waterbirds
from gradtune_jax.data.digits import WATERBIRDS_COUNTS, source_partition


def test_heldout_split_disjoint_and_deterministic():
    a, b = heldout_split(1199, seed=3)
    assert len(a) == 599 and len(b) == 600
    assert not set(a) & set(b) and set(a) | set(b) == set(range(1199))
    a2, _ = heldout_split(1199, seed=3)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, heldout_split(1199, seed=4)[0])
    # the documented recipe: first int(0.5 n) of default_rng(seed).permutation(n)
    np.testing.assert_array_equal(a, np.sort(np.random.default_rng(3).permutation(1199)[:599]))


def test_class_balanced_sampler_in_expectation():
    labels = np.array([0] * 900 + [1] * 100)
    idx = balanced_indices(labels, 20000, np.random.default_rng(0))
    frac1 = labels[idx].mean()
    assert abs(frac1 - 0.5) < 0.02


def test_group_balanced_sampler_four_groups():
    g = np.repeat(np.arange(4), [3498, 184, 56, 1057])
    idx = balanced_indices(g, 40000, np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(g[idx]) / 40000, 0.25, atol=0.01)


def test_digits_structure():
    ds = make_digits_waterbirds(seed=0)
    for s, want in WATERBIRDS_COUNTS.items():
        assert ds.split(s).group_counts().tolist() == list(want)
    assert ds.train.x.shape == (4795, 16, 16, 3) and ds.train.x.dtype == np.float32
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    # spurious: a agrees with y in ~95% of train, independent of y in test
    assert np.mean(ds.train.a == ds.train.y) > 0.94
    assert abs(np.mean(ds.test.a[ds.test.y == 1]) - 0.5) < 0.01
    # the background colour carries a: mean blue channel differs clearly between places
    blue = ds.train.x[..., 2].mean(axis=(1, 2))
    assert blue[ds.train.a == 1].mean() > blue[ds.train.a == 0].mean() + 0.2
    assert ds.check_counts(WATERBIRDS_COUNTS, log=lambda m: None)


def test_digits_deterministic_and_seeded():
    small = {"train": (5, 2, 2, 5), "val": (3, 3, 3, 3), "test": (3, 3, 3, 3)}
    a = make_digits_waterbirds(seed=1, size=8, counts=small)
    b = make_digits_waterbirds(seed=1, size=8, counts=small)
    c = make_digits_waterbirds(seed=2, size=8, counts=small)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, c.train.x)


def test_digits_sources_disjoint_across_splits():
    parts = source_partition(1797, np.random.default_rng(0))
    sets = [set(v.tolist()) for v in parts.values()]
    assert sum(len(v) for v in sets) == 1797 and len(set.union(*sets)) == 1797


def test_subset_and_masks(small_digits):
    sp = small_digits.val.subset(np.array([0, 3, 5]))
    assert len(sp) == 3 and sp.x.shape[0] == 3
    m = small_digits.test.masks()
    assert m.shape == (len(small_digits.test), 4) and np.all(m.sum(1) == 1)
