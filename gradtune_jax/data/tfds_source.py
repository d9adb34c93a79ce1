"""tensorflow-datasets as a second source for CelebA, MultiNLI and CivilComments.

Reads data the user prepared in ArrayRecord format (`tfds build celeb_a --file_format=array_record`)
through `tfds.data_source`: random access, no TensorFlow needed to read, never downloads.
These functions return raw per-split fields; the dataset modules turn them into `GroupDataset`s.
TFDS splits differ from the files the papers use (except CelebA's), so numbers are comparable with
published ones only for CelebA.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gradtune_jax.data.images import LazyImages
from gradtune_jax.errors import UserError

CELEBA = "celeb_a"
MULTINLI = "multi_nli"
CIVIL = "civil_comments/CivilCommentsIdentities"
CELEBA_SPLITS = {"train": "train", "val": "validation", "test": "test"}
CIVIL_SPLITS = {"train": "train", "val": "validation", "test": "test"}
MULTINLI_SPLITS = ("train", "validation_matched", "validation_mismatched")
# WILDS' merged identities, built from TFDS' finer columns (the max over the members).
CIVIL_IDENTITY_COLUMNS = {
    "male": ("male",), "female": ("female",),
    "LGBTQ": ("homosexual_gay_or_lesbian", "bisexual", "other_sexual_orientation", "transgender", "other_gender"),
    "christian": ("christian",), "muslim": ("muslim",),
    "other_religions": ("jewish", "hindu", "buddhist", "atheist", "other_religion"),
    "black": ("black",), "white": ("white",),
}


def data_source(name: str, split: str, data_dir: str | None) -> Sequence[dict]:
    """`tfds.data_source(name, split)` without download; `UserError` if it is not prepared."""
    import tensorflow_datasets as tfds

    if not name.startswith(CELEBA):
        from tensorflow_datasets.text import civil_comments, multi_nli  # noqa: F401 (registers builders)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many types here; all mean "not prepared as ArrayRecord"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{data_dir}: cannot open TFDS {name} split {split} ({reason}); expected it prepared "
                        f"with `tfds build {name.split('/')[0]} --file_format=array_record`") from None


def read_fields(src: Sequence[dict], fields: Sequence[str], batch_size: int = 1024) -> dict[str, list]:
    """Every example's `fields` (dotted names reach into nested dicts) as lists."""
    out: dict[str, list] = {f: [] for f in fields}
    get_many = getattr(src, "__getitems__", None)
    for s in range(0, len(src), batch_size):
        keys = list(range(s, min(s + batch_size, len(src))))
        try:
            records = get_many(keys) if get_many is not None else [src[k] for k in keys]
        except TypeError:  # wrappers without working batch reads (e.g. tfds.testing.mock_data)
            get_many = None
            records = [src[k] for k in keys]
        for r in records:
            for f in fields:
                v: Any = r
                for part in f.split("."):
                    v = v[part]
                out[f].append(v.decode() if isinstance(v, bytes) else v)
    return out


def celeba_tfds_splits(data_dir: str | None, target: str, spurious: str, image_size: int, *,
                       square: str = "crop", crop_fraction: float = 1.0,
                       num_workers: int | None = None) -> tuple[dict, dict]:
    """Per split `(LazyImages, y, a)` from TFDS `celeb_a` (attributes `target`, `spurious`)."""
    per_split = {}
    for s, tf_split in CELEBA_SPLITS.items():
        src = data_source(CELEBA, tf_split, data_dir)
        f = read_fields(src, (f"attributes.{target}", f"attributes.{spurious}"))
        x = LazyImages(list(range(len(src))), image_size, fetch=_ImageFetch(src), square=square,
                       crop_fraction=crop_fraction, num_workers=num_workers)
        per_split[s] = (x, np.asarray(f[f"attributes.{target}"], np.int64),
                        np.asarray(f[f"attributes.{spurious}"], np.int64))
    return per_split, {"source": "tfds", "builder": CELEBA, "data_dir": data_dir}


class _ImageFetch:
    """`i -> uint8 image` of a TFDS data source (a named callable, so views can share it)."""

    def __init__(self, src: Sequence[dict]):
        self.src = src

    def __call__(self, i: int) -> np.ndarray:
        return np.asarray(self.src[int(i)]["image"])


def multinli_tfds(data_dir: str | None) -> dict[str, dict[str, list]]:
    """Per TFDS split (train, validation_matched, validation_mismatched): premise, hypothesis and
    label in TFDS order (entailment 0, neutral 1, contradiction 2)."""
    return {s: read_fields(data_source(MULTINLI, s, data_dir), ("premise", "hypothesis", "label"))
            for s in MULTINLI_SPLITS}


def civilcomments_tfds(data_dir: str | None) -> dict[str, dict[str, Any]]:
    """Per split: `text` list, `toxicity` (N,) and the 8 WILDS identities `(N, 8)` in
    `CIVIL_IDENTITY_COLUMNS` order (merged ones as the max of their TFDS members)."""
    members = sorted({m for ms in CIVIL_IDENTITY_COLUMNS.values() for m in ms})
    out = {}
    for s, tf_split in CIVIL_SPLITS.items():
        f = read_fields(data_source(CIVIL, tf_split, data_dir), ("text", "toxicity", *members))
        ident = np.stack([np.max([np.asarray(f[m], np.float64) for m in ms], 0)
                          for ms in CIVIL_IDENTITY_COLUMNS.values()], 1)
        out[s] = {"text": f["text"], "toxicity": np.asarray(f["toxicity"], np.float64), "identities": ident}
    return out
