import numpy as np
import pytest

from gradtune_jax.data.digits import make_digits_waterbirds

SMALL_COUNTS = {"train": (48, 8, 8, 32), "val": (12, 12, 8, 8), "test": (16, 16, 8, 8)}


@pytest.fixture(scope="session")
def small_digits():
    """A tiny Waterbirds-shaped digits dataset (8x8 images) for fast tests."""
    return make_digits_waterbirds(seed=0, size=8, counts=SMALL_COUNTS)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
