"""Image pipeline for ResNet inputs: ImageNet normalisation, train and eval transforms.

Inputs are float32 NHWC batches in [0, 1]; outputs are normalised float32 `jax.Array`s. The
random choices (crop boxes, flips) are drawn on the host from the `np.random.Generator` the loop
passes (`fit(..., augment=ImagePipeline().train)` calls `train(x, rng)` with `default_rng([seed,
epoch])`), so a seed fixes the augmentation; the pixel work is one jitted call per batch.

- train: RandomResizedCrop(`crop`, scale=`scale`, ratio=`ratio`) as torchvision draws it (10 tries,
  then a central crop), bilinear antialiased resampling, horizontal flip with probability 1/2.
- eval: resize the shorter side to `resize` (bilinear, antialiased), centre crop `crop`.
Defaults are ImageNet's (224 / 256); small images use e.g. `ImagePipeline(crop=32, resize=36)`.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x_NHWC) -> jax.Array:
    """`(x - mean) / std` with ImageNet's channel statistics."""
    mean, std = jnp.asarray(IMAGENET_MEAN, jnp.float32), jnp.asarray(IMAGENET_STD, jnp.float32)
    return (jnp.asarray(x_NHWC, jnp.float32) - mean) / std


def crop_boxes(n: int, height: int, width: int, rng: np.random.Generator, scale: tuple[float, float],
               ratio: tuple[float, float], tries: int = 10) -> np.ndarray:
    """`(n, 4)` RandomResizedCrop boxes `(top, left, h, w)` drawn as torchvision draws them."""
    area = height * width * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    rows = np.arange(n)
    h, w = h[rows, first], w[rows, first]
    # no valid try: torchvision's fallback, the largest central crop with the aspect clamped to `ratio`
    in_ratio = width / height
    fb_w, fb_h = ((width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else
                  (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
    none_ok = ~ok.any(axis=1)
    h, w = np.where(none_ok, fb_h, h), np.where(none_ok, fb_w, w)
    top = np.where(none_ok, (height - h) // 2, rng.integers(0, height - h + 1))
    left = np.where(none_ok, (width - w) // 2, rng.integers(0, width - w + 1))
    return np.stack([top, left, h, w], axis=1).astype(np.float32)


@functools.partial(jax.jit, static_argnames="size")
def _crop_resize_flip(x_NHWC, boxes_N4, flip_N, size: int) -> jax.Array:
    def one(img_HWC, box):
        top, left, h, w = box[0], box[1], box[2], box[3]
        scale = jnp.stack([size / h, size / w])
        return jax.image.scale_and_translate(img_HWC, (size, size, img_HWC.shape[-1]), (0, 1), scale,
                                             -jnp.stack([top, left]) * scale, "linear", antialias=True)

    out = jax.vmap(one)(jnp.asarray(x_NHWC, jnp.float32), boxes_N4)
    return normalize(jnp.where(flip_N[:, None, None, None], out[:, :, ::-1], out))


@functools.partial(jax.jit, static_argnames=("resize", "crop"))
def _resize_centre_crop(x_NHWC, resize: int, crop: int) -> jax.Array:
    n, h, w, c = x_NHWC.shape
    short = min(h, w)
    new_h, new_w = (resize, int(resize * w / h)) if h == short else (int(resize * h / w), resize)
    out = jax.image.resize(jnp.asarray(x_NHWC, jnp.float32), (n, new_h, new_w, c), "linear", antialias=True)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return normalize(out[:, top:top + crop, left:left + crop])


@dataclasses.dataclass(frozen=True)
class ImagePipeline:
    """Train augmentation and eval preprocessing of NHWC float [0, 1] batches (sizes in pixels)."""

    crop: int = 224
    resize: int = 256
    scale: tuple[float, float] = (0.7, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def train(self, x_NHWC, rng: np.random.Generator) -> jax.Array:
        """RandomResizedCrop + horizontal flip + normalisation; all randomness from `rng`."""
        n, h, w = x_NHWC.shape[:3]
        boxes = crop_boxes(n, h, w, rng, self.scale, self.ratio)
        flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        return _crop_resize_flip(x_NHWC, boxes, flips, size=self.crop)

    def eval(self, x_NHWC) -> jax.Array:
        """Resize the shorter side to `resize`, centre crop `crop`, normalise."""
        return _resize_centre_crop(x_NHWC, resize=self.resize, crop=self.crop)
