"""Lazily decoded images: an array-like `x[idx] -> float32 (n, H, W, 3)` in [0, 1].

Large image sets (CelebA's 160k images) do not fit in memory as decoded float arrays, so splits
hold a `LazyImages`: indexing decodes just the requested images with PIL in a thread pool,
crops and resizes them to `image_size`. `cache_to` writes every decoded, resized image once to a
uint8 `.npy` file and reads it back as a memmap from then on (cached and uncached reads give
identical values). `prefetch_batches` overlaps decoding of the next batches with the consumer,
holding at most `depth` batches in flight. Normalisation and augmentation are the training
pipeline's job; values here are plain RGB / 255.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from gradtune_jax.errors import UserError
from gradtune_jax.io import atomic_open

SQUARE_MODES = ("crop", "stretch")


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if int(h) < 1 or int(w) < 1:
        raise UserError(f"image_size must be positive, got {image_size}")
    return int(h), int(w)


def open_image(path: str) -> Image.Image:
    """Open an image file (lazily; PIL decodes on first pixel access)."""
    try:
        return Image.open(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read image ({e})") from None


def resize_image(img: Image.Image | np.ndarray, size_hw: tuple[int, int], square: str = "crop",
                 crop_fraction: float = 1.0) -> np.ndarray:
    """RGB uint8 `(H, W, 3)`: optional central square crop (`square="crop"`), central crop of
    `crop_fraction` of each side, then bilinear resize to `size_hw`."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, np.uint8).squeeze())
    h, w = size_hw
    if img.format == "JPEG":  # decode at a reduced scale when the target is much smaller
        side = int(np.ceil(max(h, w) / crop_fraction))
        img.draft("RGB", (side, side))
    img = img.convert("RGB")
    W, H = img.size
    if square == "crop":
        s = min(W, H)
        W0, H0 = (W - s) / 2, (H - s) / 2
        box = [W0, H0, W0 + s, H0 + s]
    else:
        box = [0.0, 0.0, float(W), float(H)]
    if crop_fraction < 1.0:
        bw, bh = box[2] - box[0], box[3] - box[1]
        dx, dy = bw * (1 - crop_fraction) / 2, bh * (1 - crop_fraction) / 2
        box = [box[0] + dx, box[1] + dy, box[2] - dx, box[3] - dy]
    box = tuple(int(round(v)) for v in box)
    if box != (0, 0, W, H):
        img = img.crop(box)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, np.uint8)


class LazyImages:
    """Images decoded on access.

    Args:
      items: one key per image: a path relative to `root` (default `fetch`) or anything `fetch`
        accepts (e.g. an index into a TFDS data source).
      image_size: output side (int) or `(H, W)`.
      fetch: `key -> PIL image or uint8 array`; default opens `os.path.join(root, key)`.
      root: folder the paths are relative to.
      square: "crop" takes the central square first (keeps aspect ratio), "stretch" does not.
      crop_fraction: central fraction of each side kept before resizing (e.g. 224/256).
      num_workers: decoding threads.
    """

    def __init__(self, items: Sequence[Any], image_size: int | Sequence[int], *,
                 fetch: Callable[[Any], Image.Image | np.ndarray] | None = None, root: str = "",
                 square: str = "crop", crop_fraction: float = 1.0, num_workers: int | None = None):
        if square not in SQUARE_MODES:
            raise UserError(f"square must be one of {SQUARE_MODES}, got {square!r}")
        if not 0.0 < crop_fraction <= 1.0:
            raise UserError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.items = list(items)
        self.size_hw = _size_hw(image_size)
        self.root = root
        self.square = square
        self.crop_fraction = float(crop_fraction)
        self.num_workers = num_workers or min(8, (os.cpu_count() or 1) * 2)
        self._fetch = fetch
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._cache: np.ndarray | None = None  # uint8 memmap over all images of the cache file
        self._rows: np.ndarray | None = None  # positions of self.items in the cache file

    # -- array-like protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.size_hw, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 4

    def __getitem__(self, idx: Any) -> np.ndarray:
        """`x[i] -> (H, W, 3)`, `x[idx_array or slice] -> (n, H, W, 3)`, float32 in [0, 1]."""
        if np.isscalar(idx):
            return self.uint8(np.array([idx]))[0].astype(np.float32) / 255.0
        pos = np.arange(len(self))[idx]
        return self.uint8(pos).astype(np.float32) / 255.0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        cached = "cached" if self._cache is not None else "uncached"
        return f"LazyImages(n={len(self)}, size={self.size_hw}, {cached})"

    # -- decoding -----------------------------------------------------------------------------
    def _decode_one(self, key: Any) -> np.ndarray:
        if self._fetch is None:
            img = open_image(os.path.join(self.root, key))
        else:
            img = self._fetch(key)
        try:
            return resize_image(img, self.size_hw, self.square, self.crop_fraction)
        except OSError as e:
            raise UserError(f"{os.path.join(self.root, str(key))}: cannot decode image ({e})") from None

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode")
        return self._pool

    def uint8(self, pos: np.ndarray) -> np.ndarray:
        """Images at positions `pos` as uint8 `(n, H, W, 3)` (from the cache when there is one)."""
        pos = np.asarray(pos, np.int64).reshape(-1)
        if self._cache is not None:
            rows = pos if self._rows is None else self._rows[pos]
            return np.asarray(self._cache[rows])
        out = np.empty((len(pos), *self.size_hw, 3), np.uint8)
        if len(pos) == 1:
            out[0] = self._decode_one(self.items[pos[0]])
            return out
        for i, arr in enumerate(self._executor().map(self._decode_one, [self.items[p] for p in pos])):
            out[i] = arr
        return out

    def subset(self, idx: np.ndarray) -> "LazyImages":
        """A lazy view of the images at `idx` (shares the decoder settings and the cache)."""
        idx = np.arange(len(self))[idx]
        view = LazyImages([self.items[i] for i in idx], self.size_hw, fetch=self._fetch, root=self.root,
                          square=self.square, crop_fraction=self.crop_fraction, num_workers=self.num_workers)
        if self._cache is not None:
            view._cache = self._cache
            view._rows = idx if self._rows is None else self._rows[idx]
        return view

    # -- disk cache ---------------------------------------------------------------------------
    def cache_key(self, tag: str = "") -> str:
        """A short hash of the items and decoding settings (names the cache file)."""
        h = hashlib.sha1(f"{tag}|{self.size_hw}|{self.square}|{self.crop_fraction}|".encode())
        for it in self.items:
            h.update(str(it).encode())
            h.update(b"\0")
        return h.hexdigest()[:12]

    def cache_to(self, cache_dir: str, tag: str = "images", batch_size: int = 256,
                 progress: bool = True) -> str:
        """Decode every image once into `cache_dir/<tag>_<H>x<W>_<hash>.npy` (uint8) unless that file
        exists, then serve reads from it as a memmap. Returns the file path."""
        h, w = self.size_hw
        path = os.path.join(cache_dir, f"{tag}_{h}x{w}_{self.cache_key(tag)}.npy")
        if not os.path.isfile(path):
            os.makedirs(cache_dir, exist_ok=True)
            from gradtune_jax.progress import progress as progress_bar

            with atomic_open(path, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "|u1", "fortran_order": False, "shape": self.shape})
                starts = range(0, len(self), batch_size)
                for block in progress_bar(prefetch_batches(self.uint8, (np.arange(s, min(s + batch_size, len(self)))
                                                                        for s in starts)),
                                          total=len(starts), desc=f"caching {tag}", unit="batch", enabled=progress):
                    f.write(np.ascontiguousarray(block).tobytes())
        mm = np.load(path, mmap_mode="r")
        if mm.shape != self.shape or mm.dtype != np.uint8:
            raise UserError(f"{path}: cache holds {mm.shape} {mm.dtype}, expected {self.shape} uint8; delete it")
        self._cache, self._rows = mm, None
        return path


def prefetch_batches(get: Callable[[np.ndarray], Any], index_batches: Iterable[np.ndarray],
                     depth: int = 2) -> Iterator[Any]:
    """Yield `get(idx)` for each index batch, computing up to `depth` batches ahead in a
    background thread (bounded memory). `get` is e.g. `lambda i: take(x, i)` or `x.__getitem__`."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch") as ex:
        pending: collections.deque = collections.deque()
        for idx in index_batches:
            pending.append(ex.submit(get, idx))
            if len(pending) >= max(depth, 1):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
