"""Lazy image array, disk cache and bounded prefetch."""
import os
import threading

import numpy as np
import pytest
from PIL import Image

from gradtune_jax.data.dataset import Split, take
from gradtune_jax.data.images import LazyImages, prefetch_batches, resize_image
from gradtune_jax.errors import UserError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    names = []
    for i, (h, w) in enumerate([(20, 30), (30, 20), (17, 17), (40, 25), (12, 50), (33, 33)]):
        name = f"sub/{i}.{'jpg' if i % 2 else 'png'}"
        os.makedirs(root / "sub", exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(root / "sub/gray.png")  # grayscale
    names.append("sub/gray.png")
    return str(root), names


def test_array_like_protocol(folder):
    root, names = folder
    x = LazyImages(names, 8, root=root, num_workers=2)
    assert len(x) == 7 and x.shape == (7, 8, 8, 3) and x.ndim == 4
    batch = x[np.array([0, 3, 6])]
    assert batch.shape == (3, 8, 8, 3) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    np.testing.assert_array_equal(x[3], batch[1])
    np.testing.assert_array_equal(take(x, np.array([6, 0])), x[np.array([6, 0])])
    assert np.asarray(x).shape == (7, 8, 8, 3)
    assert x[1:3].shape == (2, 8, 8, 3)
    rect = LazyImages(names, (6, 10), root=root, square="stretch")
    assert rect[np.arange(2)].shape == (2, 6, 10, 3)


def test_values_match_pil_resize(folder):
    root, names = folder
    x = LazyImages(names, 16, root=root, square="stretch")
    ref = np.asarray(Image.open(os.path.join(root, names[0])).convert("RGB").resize((16, 16), Image.BILINEAR))
    np.testing.assert_allclose(x[0], ref / 255.0, atol=1e-6)
    crop = resize_image(Image.open(os.path.join(root, names[0])), (10, 10), "crop")
    full = np.asarray(Image.open(os.path.join(root, names[0])).convert("RGB").crop((5, 0, 25, 20)).resize((10, 10), Image.BILINEAR))
    np.testing.assert_array_equal(crop, full)


def test_split_subset_stays_lazy(folder):
    root, names = folder
    x = LazyImages(names, 8, root=root)
    sp = Split(x=x, y=np.arange(7) % 2, a=np.zeros(7, np.int64), n_classes=2, n_attrs=1)
    sub = sp.subset(np.array([5, 1]))
    assert isinstance(sub.x, LazyImages) and len(sub) == 2
    np.testing.assert_array_equal(sub.x[np.arange(2)], x[np.array([5, 1])])
    masked = sp.subset(sp.y == 1)
    assert isinstance(masked.x, LazyImages) and len(masked.x) == 3


def test_disk_cache_written_once_and_identical(folder, tmp_path, monkeypatch):
    root, names = folder
    x = LazyImages(names, 12, root=root)
    want = x[np.arange(7)]
    path = x.cache_to(str(tmp_path), tag="t", progress=False)
    assert path.endswith(".npy") and np.load(path, mmap_mode="r").dtype == np.uint8
    np.testing.assert_array_equal(x[np.arange(7)], want)
    sub = x.subset(np.array([4, 2]))
    np.testing.assert_array_equal(sub[np.arange(2)], want[[4, 2]])
    # a second array with the same items reuses the file without decoding anything
    y = LazyImages(names, 12, root=root)
    monkeypatch.setattr(LazyImages, "_decode_one", lambda self, key: pytest.fail("decoded despite cache"))
    assert y.cache_to(str(tmp_path), tag="t", progress=False) == path
    np.testing.assert_array_equal(y[np.arange(7)], want)
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    # other settings give another cache file
    assert LazyImages(names, 10, root=root).cache_key("t") != y.cache_key("t")


def test_prefetch_is_ordered_and_bounded():
    seen, started, lock = [], [], threading.Lock()

    def get(idx):
        with lock:
            started.append(int(idx[0]))
        return idx * 2

    batches = [np.array([i]) for i in range(6)]
    for i, out in enumerate(prefetch_batches(get, iter(batches), depth=2)):
        seen.append(int(out[0]))
        assert len(started) <= i + 2  # never more than `depth` batches computed ahead
    assert seen == [0, 2, 4, 6, 8, 10]


def test_unreadable_and_missing_images(folder, tmp_path):
    root, names = folder
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.jpg"):
        LazyImages(["bad.jpg"], 8, root=str(tmp_path))[0]
    with pytest.raises(UserError, match="nope.png"):
        LazyImages(["nope.png"], 8, root=str(tmp_path))[np.arange(1)]
    with pytest.raises(UserError, match="square"):
        LazyImages(names, 8, root=root, square="pad")
    with pytest.raises(UserError, match="crop_fraction"):
        LazyImages(names, 8, root=root, crop_fraction=0.0)
