"""Every real-data loader is registered and asks for its folder with one clear error."""
import pytest

from gradtune_jax.data import dataset_names, load_dataset
from gradtune_jax.errors import UserError

REAL = ("waterbirds", "celeba_blond", "celeba_age", "multinli", "civilcomments", "civilcomments_wilds", "features")


def test_registered():
    assert set(REAL) | {"digits"} <= set(dataset_names())


@pytest.mark.parametrize("name", REAL)
def test_needs_data_dir(name):
    with pytest.raises(UserError, match="needs data_dir|give path="):
        load_dataset(name)


@pytest.mark.parametrize("name", ("celeba_blond", "multinli", "civilcomments"))
def test_unknown_source(name, tmp_path):
    with pytest.raises(UserError, match="source must be 'files' or 'tfds'"):
        load_dataset(name, data_dir=str(tmp_path), source="hub")
