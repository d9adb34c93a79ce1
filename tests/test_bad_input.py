"""Every class of bad input stops the CLI before any work: exit status 2, exactly one line on stderr
("error: ..."), naming the argument or file, and nothing already written is lost."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments import common, table1
from gradtune_jax.data import registry
from gradtune_jax.data.dataset import GroupDataset, Split
from gradtune_jax.data.validate import validate
from gradtune_jax.errors import UserError

FAST = ["--quick", "--no-progress", "--methods", "erm"]


@pytest.fixture
def out(tmp_path):
    """An output folder holding a file of an earlier run."""
    o = tmp_path / "out"
    o.mkdir()
    (o / "table1.csv").write_text("keep me\n")
    return o


@pytest.fixture
def no_training(monkeypatch):
    """Bad input must be refused before any ERM step: any training call fails the test."""
    import experiments.runner as runner

    def boom(*a, **k):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(runner, "erm_feature_set", boom)


def run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = common.run_cli(table1.main, argv)
    return rc, capsys.readouterr().err


def assert_refused(rc: int, err: str, needle: str, out) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert (out / "table1.csv").read_text() == "keep me\n"  # nothing already written is lost


# ---- output folders ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--out", "--erm-cache"])
@pytest.mark.parametrize("case", ["regular_file", "under_regular_file", "proc"])
def test_unwritable_output_folder(flag, case, out, tmp_path, capsys, no_training):
    f = tmp_path / "a_file"
    f.write_text("x")
    bad = {"regular_file": str(f), "under_regular_file": str(f / "sub"), "proc": "/proc/gradtune_x"}[case]
    argv = FAST + (["--out", bad] if flag == "--out" else ["--out", str(out), "--erm-cache", bad])
    rc, err = run(argv, capsys)
    assert_refused(rc, err, f"{flag} {bad}", out)
    assert f.read_text() == "x"


# ---- dataset files -----------------------------------------------------------------------------

def _features(n=90, d=4, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(n, d)).astype(np.float32), "y": np.arange(n) % 2,
            "a": (np.arange(n) // 2) % 2, "split": (np.arange(n) // 3) % 3}


@pytest.mark.parametrize("case, needle", [
    ("nan", "features has 1 non-finite value(s) (NaN; first at row 7, column 2)"),
    ("inf", "features has 2 non-finite value(s) (inf"),
    ("head_nan", "head_kernel has 1 non-finite"),
    ("no_test_rows", "split(s) test have no rows"),
    ("class_missing_in_train", "the train split has no example of class(es) class1"),
    ("class_missing_in_val", "the val split has no example of class(es) class0"),
])
def test_bad_features_file(case, needle, out, tmp_path, capsys, no_training):
    z = _features()
    if case == "nan":
        z["features"][7, 2] = np.nan
    elif case == "inf":
        z["features"][[3, 5], 0] = [np.inf, -np.inf]
    elif case == "head_nan":
        k = np.zeros((4, 2), np.float32)
        k[1, 1] = np.nan
        z.update(head_kernel=k, head_bias=np.zeros(2, np.float32))
    elif case == "no_test_rows":
        z["split"][z["split"] == 2] = 1
    elif case == "class_missing_in_train":
        z["y"][z["split"] == 0] = 0
    elif case == "class_missing_in_val":
        z["y"][z["split"] == 1] = 1
    path = tmp_path / "emb.npz"
    np.savez(path, **z)
    rc, err = run(FAST + ["--dataset", "features", "--data-dir", str(path), "--out", str(out)], capsys)
    assert_refused(rc, err, f"{path}: ", out)
    assert needle in err


def _dataset(**split_changes) -> GroupDataset:
    rng = np.random.default_rng(0)

    def split(n):
        return Split(x=rng.normal(size=(n, 3)).astype(np.float32), y=np.arange(n) % 2, a=(np.arange(n) // 2) % 2,
                     n_classes=2, n_attrs=2)

    splits = {"train": split(40), "val": split(20), "test": split(20)}
    for name, change in split_changes.items():
        splits[name] = change(splits[name])
    return GroupDataset(name="custom", **splits, class_names=("c0", "c1"), attr_names=("p", "q"),
                        input_kind="features", info={"path": "/data/custom.npz"})


def _set(field, idx, value):
    def change(sp):
        arr = np.array(getattr(sp, field), copy=True)
        arr[idx] = value
        return dataclasses.replace(sp, **{field: arr})
    return change


BAD_DATASETS = {
    "y_out_of_range": ({"train": _set("y", 5, 2)}, "train y must be in [0, 2) (2 classes); got 2 at row 5"),
    "y_negative": ({"test": _set("y", 0, -1)}, "test y must be in [0, 2)"),
    "a_out_of_range": ({"val": _set("a", 3, 7)}, "val a must be in [0, 2) (2 attribute values); got 7 at row 3"),
    "empty_train": ({"train": lambda sp: sp.subset(np.arange(0))}, "split(s) train have no examples"),
    "nan_inputs": ({"val": _set("x", (2, 1), np.nan)}, "val features has 1 non-finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_bad_dataset_through_the_cli(case, out, capsys, monkeypatch, no_training):
    """Any loader's dataset passes `validate` in `registry.load_dataset`: labels out of range,
    empty splits, non-finite inputs are one line naming the file."""
    changes, needle = BAD_DATASETS[case]
    monkeypatch.setitem(registry._LOADERS, "features", lambda **kw: _dataset(**changes))
    rc, err = run(FAST + ["--dataset", "features", "--out", str(out)], capsys)
    assert_refused(rc, err, "/data/custom.npz: ", out)
    assert needle in err


def test_empty_test_group_is_allowed():
    """A test group with no example is fine (WGA is over the groups present)."""
    keep = lambda sp: sp.subset(np.flatnonzero(sp.g != 3))  # noqa: E731
    ds = _dataset(test=keep)
    assert validate(ds) is ds and ds.test.group_counts()[3] == 0


def test_valid_dataset_passes_unchanged():
    ds = _dataset()
    assert validate(ds) is ds
    with pytest.raises(UserError, match="dataset digits2"):
        validate(dataclasses.replace(_dataset(train=_set("y", 0, 9)), name="digits2", info={}))


# ---- arguments ---------------------------------------------------------------------------------

def test_k_larger_than_size(out, capsys, no_training):
    rc, err = run(FAST + ["--size", "10", "--k", "20", "--out", str(out)], capsys)
    assert_refused(rc, err, "--k", out)
