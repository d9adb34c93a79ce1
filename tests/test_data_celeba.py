"""CelebA (txt and Kaggle CSV layouts): Blond and Age tasks, the 4:1 Age subsample, errors."""
import os
import shutil

import numpy as np
import pytest

from gradtune_jax.data import load_dataset
from gradtune_jax.data.celeba import age_subsample, load_celeba
from gradtune_jax.data.synthetic import CELEBA_ATTRS, write_celeba_folder
from gradtune_jax.errors import UserError

BLOND, MALE, YOUNG = (CELEBA_ATTRS.index(n) for n in ("Blond_Hair", "Male", "Young"))
# train: (young, male) group sizes; old-female 6, old-male 30, young-female 41, young-male 9
TRAIN_GROUPS = {(0, 0): 6, (0, 1): 30, (1, 0): 41, (1, 1): 9}


def _attrs(seed=0):
    rng = np.random.default_rng(seed)
    rows, split = [], []
    for code, groups in enumerate([TRAIN_GROUPS, {k: 3 for k in TRAIN_GROUPS}, {k: 2 for k in TRAIN_GROUPS}]):
        for (young, male), n in groups.items():
            for _ in range(n):
                r = rng.integers(0, 2, size=40)
                r[YOUNG], r[MALE] = young, male
                rows.append(r)
                split.append(code)
    return np.array(rows), np.array(split)


@pytest.fixture(scope="module", params=["txt", "csv"])
def celeba(request, tmp_path_factory):
    attrs, split = _attrs()
    root = str(tmp_path_factory.mktemp(f"celeba_{request.param}"))
    write_celeba_folder(root, attrs, split, layout=request.param)
    return root, attrs, split


def test_blond(celeba, capsys):
    root, attrs, split = celeba
    ds = load_celeba(root, "blond", image_size=10)
    tr = split == 0
    assert ds.train.y.tolist() == attrs[tr, BLOND].tolist()
    assert ds.train.a.tolist() == attrs[tr, MALE].tolist()
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [86, 12, 8]
    assert ds.names_of_groups() == ["not_blond/female", "not_blond/male", "blond/female", "blond/male"]
    assert ds.train.x[np.arange(2)].shape == (2, 10, 10, 3)
    assert "differ from the known [71629, 66874, 22880, 1387]" in capsys.readouterr().out


def test_age_subsample_4_to_1(celeba, capsys):
    root, _, split = celeba
    ds = load_dataset("celeba_age", data_dir=root, image_size=8, minority_per_class=5)
    # k = min(5, 6, 9, 30 // 4, 41 // 4) = 5: per class 5 minority + 20 majority
    assert ds.train.group_counts().tolist() == [5, 20, 20, 5]
    assert ds.val.group_counts().tolist() == [3, 3, 3, 3] and len(ds.test) == 8
    assert ds.info["age_subsample"]["counts"] == [5, 20, 20, 5]
    assert "CelebA-Age train subsample (seed 0, 4:1 within class)" in capsys.readouterr().out
    again = load_celeba(root, "age", 8, minority_per_class=5, verbose=False)
    other = load_celeba(root, "age", 8, minority_per_class=5, subsample_seed=1, verbose=False)
    assert again.train.x.items == ds.train.x.items and other.train.x.items != ds.train.x.items
    # the most the data allows when more is asked for: k = min(6, 9, 7, 10) = 6
    big = load_celeba(root, "age", 8, verbose=False)
    assert big.train.group_counts().tolist() == [6, 24, 24, 6]


def test_age_subsample_function():
    y = np.array([0] * 10 + [0] * 100 + [1] * 100 + [1] * 10)
    a = np.array([0] * 10 + [1] * 100 + [0] * 100 + [1] * 10)
    idx = age_subsample(y, a, seed=4, minority_per_class=8, log=lambda _: None)
    assert np.bincount(2 * y[idx] + a[idx], minlength=4).tolist() == [8, 32, 32, 8]
    assert np.all(np.diff(idx) > 0)
    with pytest.raises(UserError, match="too small"):
        age_subsample(y[:10], a[:10], seed=0, log=lambda _: None)


def test_kaggle_nested_images(tmp_path):
    attrs, split = _attrs()
    write_celeba_folder(str(tmp_path), attrs, split, layout="csv")
    os.makedirs(tmp_path / "x")
    shutil.move(str(tmp_path / "img_align_celeba"), str(tmp_path / "x" / "img_align_celeba"))
    shutil.move(str(tmp_path / "x"), str(tmp_path / "img_align_celeba"))
    ds = load_celeba(str(tmp_path), "blond", 8, verbose=False)
    assert ds.test.x[np.arange(2)].shape == (2, 8, 8, 3)


def _edit(path, fn):
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize("fname, fn, match", [
    ("list_attr_celeba.txt", lambda l: ["999"] + l[1:], "line 1 says 999 images but 106 rows follow"),
    ("list_attr_celeba.txt", lambda l: l[:1] + [l[1].replace("Young", "Old")] + l[2:], "Young not in the header"),
    ("list_attr_celeba.txt", lambda l: l[:2] + [l[2].rsplit(" ", 1)[0] + "  0"] + l[3:], "column Young must be one of \\[-1, 1\\]"),
    ("list_attr_celeba.txt", lambda l: l[:2] + [l[2] + " 1"] + l[3:], "line 3 has 42 fields"),
    ("list_eval_partition.txt", lambda l: l[:-1], "no partition for 1 image"),
    ("list_eval_partition.txt", lambda l: l[:-1] + [l[-1][:-1] + "7"], "column partition must be one of 0, 1, 2"),
])
def test_file_errors(tmp_path, fname, fn, match):
    attrs, split = _attrs()
    write_celeba_folder(str(tmp_path), attrs, split, layout="txt")
    _edit(str(tmp_path / fname), fn)
    with pytest.raises(UserError, match=match) as e:
        load_celeba(str(tmp_path), "age", 8, verbose=False)
    assert fname in str(e.value)


def test_missing_pieces(tmp_path):
    attrs, split = _attrs()
    write_celeba_folder(str(tmp_path), attrs, split, layout="csv")
    os.remove(tmp_path / "img_align_celeba" / "000004.jpg")
    with pytest.raises(UserError, match="missing: 000004.jpg"):
        load_celeba(str(tmp_path), "blond", 8, verbose=False)
    os.remove(tmp_path / "list_eval_partition.csv")
    with pytest.raises(UserError, match="list_eval_partition.txt, list_eval_partition.csv"):
        load_celeba(str(tmp_path), "blond", 8, verbose=False)
    with pytest.raises(UserError, match="target"):
        load_celeba(str(tmp_path), "smiling")
    with pytest.raises(UserError, match="source"):
        load_celeba(str(tmp_path), "blond", source="hf")
