"""CivilComments (WILDS v1.0 `all_data_with_identities.csv`, or TFDS CivilCommentsIdentities).

y = toxicity >= 0.5. Two groupings, selectable:
- "4" (GradTune, SELF, DFR): a = 1 if any of the 8 identities below is >= 0.5; g = 2 * y + a.
- "wilds16": for each identity (WILDS order male, female, LGBTQ, christian, muslim,
  other_religions, black, white) and each class, the comments mentioning it: 16 overlapping
  groups in `Split.group_masks` (comments without an identity are in none); WGA is the min over
  the 16. `a` is still the any-identity attribute.
"""
from __future__ import annotations

import os

import numpy as np

from gradtune_jax.data.dataset import SPLITS, GroupDataset, Split, take
from gradtune_jax.data.files import (SPLIT_NAMES, find_file, parse_codes, parse_floats, read_csv, report_counts,
                                     require_dir, split_indices)
from gradtune_jax.data.text import CIVILCOMMENTS_MAX_LENGTH, text_inputs
from gradtune_jax.errors import UserError

IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
GROUPINGS = ("4", "wilds16")
CLASS_NAMES = ("non_toxic", "toxic")
KNOWN_COUNTS_4 = {"train": (148186, 90337, 12731, 17784), "val": (25159, 14966, 2111, 2944),
                  "test": (74780, 43778, 6455, 8769)}
SPLIT_SIZES = {"train": 269038, "val": 45180, "test": 133782}
CSV_NAME = "all_data_with_identities.csv"


def group_masks_wilds16(y: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """(N, 16) membership: column `2 * i + c` = identity i present (>= 0.5) and class c."""
    present = np.asarray(identities) >= 0.5
    y = np.asarray(y)
    return np.stack([present[:, i] & (y == c) for i in range(present.shape[1]) for c in (0, 1)], 1)


def read_wilds_csv(data_dir: str) -> tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """`(path, texts, toxicity (N,), identities (N, 8), split codes (N,))` of the WILDS CSV (in
    `data_dir` or its `civilcomments_v1.0/`); blank identity cells count as 0."""
    sub = os.path.join(data_dir, "civilcomments_v1.0")
    folder = sub if os.path.isfile(os.path.join(sub, CSV_NAME)) else data_dir
    path = find_file(folder, (CSV_NAME,), f"WILDS CivilComments v1.0 {CSV_NAME}")
    cols = read_csv(path, ("comment_text", "toxicity", "split", *IDENTITIES))
    tox = parse_floats(cols["toxicity"], path, "toxicity", 0.0, 1.0)
    ident = np.stack([parse_floats(cols[c], path, c, 0.0, 1.0, empty=0.0) for c in IDENTITIES], 1)
    split = parse_codes(cols["split"], path, "split", SPLIT_NAMES)
    return path, cols["comment_text"], tox, ident, split


def load_civilcomments(data_dir: str | None = None, tokenizer_dir: str | None = None, max_length: int = CIVILCOMMENTS_MAX_LENGTH,
                       *, grouping: str = "4", source: str = "files", verbose: bool = True) -> GroupDataset:
    """CivilComments with the 4-group or the WILDS 16-group (overlapping) definition.

    Args:
      data_dir: folder with `all_data_with_identities.csv` (for `source="tfds"`: the TFDS data dir
        with a prepared `civil_comments/CivilCommentsIdentities`, whose split differs from WILDS').
      tokenizer_dir: local tokenizer folder (x = int32 token arrays); None keeps the raw strings.
      max_length: token length (220 in the papers).
      grouping: "4" or "wilds16".
      source: "files" or "tfds".
      verbose: print per-split group counts (warning when they differ from the published ones).
    """
    if grouping not in GROUPINGS:
        raise UserError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if source == "files":
        data_dir = require_dir(data_dir, "civilcomments", f"a folder with {CSV_NAME}")
        where, texts, tox, ident, split = read_wilds_csv(data_dir)
    elif source == "tfds":
        from gradtune_jax.data.tfds_source import CIVIL, civilcomments_tfds

        t = civilcomments_tfds(data_dir)
        where = f"TFDS {CIVIL} in {data_dir or 'the default data dir'}"
        texts = [s for sp in SPLITS for s in t[sp]["text"]]
        tox = np.concatenate([t[sp]["toxicity"] for sp in SPLITS])
        ident = np.concatenate([t[sp]["identities"] for sp in SPLITS])
        split = np.concatenate([np.full(len(t[sp]["toxicity"]), i, np.int64) for i, sp in enumerate(SPLITS)])
    else:
        raise UserError(f"source must be 'files' or 'tfds', got {source!r}")
    y = (tox >= 0.5).astype(np.int64)
    a = (ident >= 0.5).any(1).astype(np.int64)
    masks = group_masks_wilds16(y, ident) if grouping == "wilds16" else None
    x = text_inputs(tokenizer_dir, {"text": list(texts)}, max_length)
    parts = split_indices(split, where)
    splits = {s: Split(x=take(x, idx), y=y[idx], a=a[idx], n_classes=2, n_attrs=2,
                       group_masks=None if masks is None else masks[idx]) for s, idx in parts.items()}
    if grouping == "wilds16":
        group_names = tuple(f"{i}/{c}" for i in IDENTITIES for c in CLASS_NAMES)
    else:
        group_names = tuple(f"{c}/{n}" for c in CLASS_NAMES for n in ("no_identity", "identity"))
    ds = GroupDataset(
        name="civilcomments" if grouping == "4" else "civilcomments_wilds", **splits, class_names=CLASS_NAMES,
        attr_names=("no_identity", "identity"), group_names=group_names, input_kind="text",
        info={"source": source, "root": data_dir, "grouping": grouping, "max_length": max_length,
              "tokenizer_dir": tokenizer_dir, "comparable_with_published": source == "files"})
    files = source == "files"
    ds.info["counts_match_known"] = report_counts(ds, KNOWN_COUNTS_4 if files and grouping == "4" else None,
                                                  SPLIT_SIZES if files else None, verbose=verbose)
    return ds
