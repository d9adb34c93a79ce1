"""Waterbirds-layout folders: splits, groups, counts, any image size, validation errors."""
import csv
import os
import shutil

import numpy as np
import pytest

from gradtune_jax.data import load_dataset
from gradtune_jax.data.synthetic import SMALL_WATERBIRDS_COUNTS, write_waterbirds_folder
from gradtune_jax.data.waterbirds import load_waterbirds
from gradtune_jax.errors import UserError


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return write_waterbirds_folder(str(tmp_path_factory.mktemp("wb")), image_size=20, seed=3)


def _rewrite(src, dst, edit):
    """Copy the metadata of `src` into a new folder (images linked) after `edit(rows)`."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("metadata.csv"))
    with open(os.path.join(src, "metadata.csv")) as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with open(os.path.join(dst, "metadata.csv"), "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(dst)


def test_splits_groups_counts(wb, capsys):
    ds = load_waterbirds(wb, image_size=16)
    for s in ("train", "val", "test"):
        assert ds.split(s).group_counts().tolist() == list(SMALL_WATERBIRDS_COUNTS[s])
    out = capsys.readouterr().out
    assert "landbird/water" in out and "differ from the known [3498, 184, 56, 1057]" in out
    assert ds.n_groups == 4 and ds.input_kind == "image" and ds.info["counts_match_known"] is False
    x = ds.train.x[np.arange(5)]
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.float32
    # labels follow the metadata rows
    with open(os.path.join(wb, "metadata.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "1"]
    assert ds.val.y.tolist() == [int(r["y"]) for r in rows]
    assert ds.val.a.tolist() == [int(r["place"]) for r in rows]
    # water-background images are bluer than land ones (the generator's spurious cue)
    imgs = ds.val.x[np.arange(len(ds.val))]
    blue_minus_red = (imgs[..., 2] - imgs[..., 0]).mean((1, 2))
    assert blue_minus_red[ds.val.a == 1].mean() > blue_minus_red[ds.val.a == 0].mean()


def test_parent_folder_registry_and_any_size(wb, tmp_path, capsys):
    parent = tmp_path / "data"
    shutil.copytree(wb, parent / "waterbird_complete95_forest2water2")
    ds = load_dataset("waterbirds", data_dir=str(parent), image_size=12, verbose=False)
    assert ds.test.x[np.arange(3)].shape == (3, 12, 12, 3)
    assert capsys.readouterr().out == ""
    cache = tmp_path / "cache"
    ds2 = load_waterbirds(wb, image_size=12, cache_dir=str(cache), verbose=False)
    assert len([f for f in os.listdir(cache) if f.endswith(".npy")]) == 3
    np.testing.assert_array_equal(ds2.test.x[np.arange(4)], ds.test.x[np.arange(4)])


def test_known_counts_match_silently():
    counts = {"train": (3498, 184, 56, 1057), "val": (467, 466, 133, 133), "test": (2255, 2255, 642, 642)}
    from gradtune_jax.data.files import report_counts
    from gradtune_jax.data.digits import make_digits_waterbirds
    logs = []
    assert report_counts(make_digits_waterbirds(size=8), counts, log=logs.append)
    assert not any("warning" in m for m in logs)


@pytest.mark.parametrize("edit, match", [
    (lambda r: [[c for i, c in enumerate(row) if i != 4] for row in r], r"missing column\(s\) place"),
    (lambda r: r[:1] + [r[1][:2] + ["2"] + r[1][3:]] + r[2:], r"column y must be one of \[0, 1\]; got row 1: '2'"),
    (lambda r: r[:1] + [r[1][:3] + ["train"] + r[1][4:]] + r[2:], r"column split must be one of 0, 1, 2; got row 1: 'train'"),
    (lambda r: r[:1] + [r[1][:1] + ["nowhere/x.png"] + r[1][2:]] + r[2:], r"1 image file\(s\) .* missing: nowhere/x.png"),
    (lambda r: [row for row in r if row[3] != "2"], r"split\(s\) test have no rows"),
])
def test_metadata_errors(wb, tmp_path, edit, match):
    bad = _rewrite(wb, tmp_path / "bad", edit)
    with pytest.raises(UserError, match=match) as e:
        load_waterbirds(bad, verbose=False)
    assert "metadata.csv" in str(e.value) or "bad" in str(e.value)


def test_missing_folder_and_metadata(tmp_path):
    with pytest.raises(UserError, match="needs data_dir"):
        load_waterbirds(None)
    with pytest.raises(UserError, match="folder not found"):
        load_waterbirds(str(tmp_path / "absent"))
    with pytest.raises(UserError, match="no metadata.csv"):
        load_waterbirds(str(tmp_path))
