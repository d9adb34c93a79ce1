"""TFDS as a second source (CelebA, MultiNLI, CivilComments), via mock data and without TensorFlow."""
import csv

import numpy as np
import pytest

import tensorflow_datasets as tfds  # a hard dependency: never skip these tests

from gradtune_jax.data import load_dataset  # noqa: E402
from gradtune_jax.data.multinli import has_negation  # noqa: E402
from gradtune_jax.data.tfds_source import MULTINLI_SPLITS, data_source, read_fields  # noqa: E402
from gradtune_jax.errors import UserError  # noqa: E402

N = 12


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_celeba_blond(mock):
    ds = load_dataset("celeba_blond", source="tfds", image_size=8, verbose=False)
    f = read_fields(data_source("celeb_a", "validation", None), ("attributes.Blond_Hair", "attributes.Male"))
    assert ds.val.y.tolist() == [int(v) for v in f["attributes.Blond_Hair"]]
    assert ds.val.a.tolist() == [int(v) for v in f["attributes.Male"]]
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [N, N, N]
    x = ds.test.x[np.arange(3)]
    assert x.shape == (3, 8, 8, 3) and x.dtype == np.float32 and ds.info["source"] == "tfds"


def test_multinli_native_splits_and_remap(mock):
    ds = load_dataset("multinli", source="tfds", verbose=False)
    src = data_source("multi_nli", "validation_matched", None)
    f = read_fields(src, ("hypothesis", "label"))
    assert ds.val.y.tolist() == [[1, 2, 0][int(v)] for v in f["label"]]
    assert ds.val.a.tolist() == [int(has_negation(h)) for h in f["hypothesis"]]
    assert ds.info["comparable_with_published"] is False


def test_multinli_group_dro_split_from_tfds(mock, tmp_path):
    labels = []
    for s in MULTINLI_SPLITS:
        labels += [[1, 2, 0][int(v)] for v in read_fields(data_source("multi_nli", s, None), ("label",))["label"]]
    split = np.arange(len(labels)) % 3
    meta = tmp_path / "metadata_random.csv"
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "gold_label", "sentence2_has_negation", "split"])
        w.writerows([i, lab, 0, s] for i, (lab, s) in enumerate(zip(labels, split)))
    ds = load_dataset("multinli", source="tfds", metadata_path=str(meta), verbose=False)
    assert ds.train.y.tolist() == [lab for lab, s in zip(labels, split) if s == 0]
    assert ds.info["comparable_with_published"] is True
    labels[0] = (labels[0] + 1) % 3
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gold_label", "split"])
        w.writerows(zip(labels, split))
    with pytest.raises(UserError, match="gold_label disagrees with TFDS multi_nli"):
        load_dataset("multinli", source="tfds", metadata_path=str(meta), verbose=False)


def test_civilcomments_both_groupings(mock):
    four = load_dataset("civilcomments", source="tfds", verbose=False)
    wilds = load_dataset("civilcomments_wilds", source="tfds", verbose=False)
    f = read_fields(data_source("civil_comments/CivilCommentsIdentities", "test", None),
                    ("toxicity", "male", "bisexual", "transgender"))
    y = (np.asarray(f["toxicity"]) >= 0.5).astype(int)
    assert four.test.y.tolist() == y.tolist()
    assert wilds.test.masks().shape == (N, 16)
    assert wilds.test.masks()[:, 0].tolist() == ((np.asarray(f["male"]) >= 0.5) & (y == 0)).tolist()
    lgbtq = np.maximum(np.asarray(f["bisexual"]), np.asarray(f["transgender"])) >= 0.5
    assert np.all(wilds.test.masks()[:, 4] | wilds.test.masks()[:, 5] >= lgbtq)
    assert four.info["comparable_with_published"] is False


def test_not_prepared(tmp_path):
    with pytest.raises(UserError, match="cannot open TFDS celeb_a split train"):
        load_dataset("celeba_blond", source="tfds", data_dir=str(tmp_path), verbose=False)
