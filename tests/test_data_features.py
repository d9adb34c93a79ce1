"""Precomputed features .npz: groups from a or g, the ERM head, and validation errors."""
import numpy as np
import pytest

from gradtune_jax.data import load_dataset
from gradtune_jax.data.features import load_features
from gradtune_jax.errors import UserError
from gradtune_jax.metrics import evaluate


def _arrays(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = rng.integers(0, 2, n)
    split = np.arange(n) % 3
    return {"features": rng.normal(size=(n, d)).astype(np.float32), "y": y, "split": split, "a": a}


def test_with_a_and_head(tmp_path):
    z = _arrays()
    z.update(head_kernel=np.ones((5, 2), np.float32), head_bias=np.zeros(2, np.float32))
    np.savez(tmp_path / "features.npz", **z)
    ds = load_dataset("features", data_dir=str(tmp_path), verbose=False)
    tr = z["split"] == 0
    assert ds.input_kind == "features" and ds.n_groups == 4
    np.testing.assert_array_equal(ds.train.x, z["features"][tr])
    assert ds.train.g.tolist() == (2 * z["y"][tr] + z["a"][tr]).tolist()
    assert ds.info["head"]["kernel"].shape == (5, 2) and ds.info["head"]["bias"].dtype == np.float32
    pred = (ds.test.x @ ds.info["head"]["kernel"] + ds.info["head"]["bias"]).argmax(-1)
    assert 0.0 <= evaluate(pred, ds.test.y, ds.test.masks())["wga"] <= 1.0


def test_with_g_names_and_without_groups(tmp_path, capsys):
    z = _arrays()
    g = 3 * z["y"] + np.arange(60) % 3
    np.savez(tmp_path / "g.npz", features=z["features"], y=z["y"], split=z["split"], g=g,
             class_names=np.array(["cat", "dog"]), attr_names=np.array(["p", "q", "r"]))
    ds = load_features(str(tmp_path / "g.npz"), verbose=False)
    assert ds.train.n_attrs == 3 and ds.n_groups == 6 and ds.names_of_groups()[4] == "dog/q"
    assert ds.val.g.tolist() == g[z["split"] == 1].tolist()
    np.savez(tmp_path / "plain.npz", features=z["features"], y=z["y"], split=z["split"])
    ds = load_features(str(tmp_path / "plain.npz"))
    assert ds.n_groups == 2 and ds.info["head"] is None
    assert "no a or g array" in capsys.readouterr().out


@pytest.mark.parametrize("change, match", [
    (lambda z: z.pop("y"), r"missing array\(s\) y"),
    (lambda z: z.update(split=np.full(60, 3)), "split must be 0 \\(train\\), 1 \\(val\\) or 2 \\(test\\), got \\[3\\]"),
    (lambda z: z.update(y=z["y"][:10]), "y must have shape \\(60,\\)"),
    (lambda z: z.update(features=np.zeros(60)), "features must be a numeric \\(N, D\\) array"),
    (lambda z: z.update(a=np.full(60, -1)), "a must be >= 0"),
    (lambda z: z.update(y=z["y"] + 0.5), "y must hold integers"),
    (lambda z: z.update(head_kernel=np.ones((4, 2))), "give both head_kernel"),
    (lambda z: z.update(head_kernel=np.ones((4, 2)), head_bias=np.zeros(2)), "head_kernel must be \\(5, C\\)"),
    (lambda z: (z.pop("a"), z.update(g=np.arange(60) % 4)), "g must equal y \\* n_attrs \\+ a"),
    (lambda z: z.update(split=np.zeros(60, int)), "split\\(s\\) val, test have no rows"),
])
def test_errors(tmp_path, change, match):
    z = _arrays()
    change(z)
    np.savez(tmp_path / "f.npz", **z)
    with pytest.raises(UserError, match=match) as e:
        load_features(str(tmp_path / "f.npz"), verbose=False)
    assert "f.npz" in str(e.value)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(UserError, match="features.npz: file not found"):
        load_features(data_dir=str(tmp_path))
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_features(str(tmp_path / "x.npz"))
    with pytest.raises(UserError, match="give path="):
        load_features()
