"""Image pipeline: shapes, per-seed determinism, flips, crop boxes, normalisation values."""
from __future__ import annotations

import numpy as np

from gradtune_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, crop_boxes, normalize


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, h, w, 3)).astype(np.float32)


def test_normalize_uses_imagenet_statistics():
    x = np.broadcast_to(np.asarray(IMAGENET_MEAN, np.float32), (1, 2, 2, 3))
    np.testing.assert_allclose(normalize(x), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalize(np.ones((1, 1, 1, 3), np.float32))[0, 0, 0],
                               (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-6)


def test_train_shapes_and_determinism_per_seed():
    pipe = ImagePipeline(crop=16, resize=20)
    x = _images(6, 24, 20)
    a = np.asarray(pipe.train(x, np.random.default_rng([3, 0])))
    b = np.asarray(pipe.train(x, np.random.default_rng([3, 0])))
    c = np.asarray(pipe.train(x, np.random.default_rng([3, 1])))
    assert a.shape == (6, 16, 16, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_full_crop_is_identity_up_to_flips_and_both_flips_occur():
    pipe = ImagePipeline(crop=12, resize=12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    x = _images(16, 12, 12)
    out = np.asarray(pipe.train(x, np.random.default_rng(0)))
    plain, flipped = np.asarray(normalize(x)), np.asarray(normalize(x[:, :, ::-1]))
    is_plain = np.isclose(out, plain, atol=1e-5).all(axis=(1, 2, 3))
    is_flipped = np.isclose(out, flipped, atol=1e-5).all(axis=(1, 2, 3))
    assert (is_plain | is_flipped).all() and is_plain.any() and is_flipped.any()
    no_flip = np.asarray(ImagePipeline(crop=12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
                         .train(x, np.random.default_rng(0)))
    np.testing.assert_allclose(no_flip, plain, atol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    boxes = crop_boxes(500, 40, 60, np.random.default_rng(0), (0.7, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area = h * w / (40 * 60)
    assert area.min() > 0.65 and area.max() <= 1.0 + 1e-6
    assert ((w / h) > 0.7).all() and ((w / h) < 1.4).all()
    fallback = crop_boxes(3, 10, 100, np.random.default_rng(0), (0.9, 1.0), (1.0, 1.0))  # no try fits
    np.testing.assert_array_equal(fallback, [[0, 45, 10, 10]] * 3)


def test_eval_resizes_shorter_side_and_centre_crops():
    pipe = ImagePipeline(crop=32, resize=36)
    x = _images(2, 36, 36)
    out = np.asarray(pipe.eval(x))
    np.testing.assert_allclose(out, np.asarray(normalize(x[:, 2:34, 2:34])), atol=1e-5)
    assert pipe.eval(_images(2, 40, 60)).shape == (2, 32, 32, 3)  # 40x60 -> 36x54 -> 32x32
    assert ImagePipeline().eval(_images(1, 64, 48)).shape == (1, 224, 224, 3)
