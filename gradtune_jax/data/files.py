"""Reading and validating user files: every problem becomes one `UserError` line naming the file.

Shared by the loaders of real datasets: CSV columns, integer/float parsing with range checks,
split codes, missing files/images, and the per-split group count report on load.
"""
from __future__ import annotations

import csv
import os
import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from gradtune_jax.data.dataset import SPLITS, GroupDataset
from gradtune_jax.errors import UserError

SPLIT_CODES = {"0": 0, "1": 1, "2": 2}
SPLIT_NAMES = {"train": 0, "val": 1, "test": 2}
_SHOW = 5  # offending values/rows quoted in an error message

csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))


def require_dir(data_dir: str | None, dataset: str, expected: str) -> str:
    """`data_dir`, or a `UserError` saying that `dataset` needs one holding `expected`."""
    if data_dir is None:
        raise UserError(f"dataset {dataset} needs data_dir (--data-dir): {expected}")
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: folder not found; expected {expected}")
    return data_dir


def find_file(folder: str, names: Sequence[str], what: str) -> str:
    """The first of `names` that exists in `folder`, else a `UserError` listing them."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: folder not found; expected {what}")
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p):
            return p
    raise UserError(f"{folder}: none of {', '.join(names)} found; expected {what}")


def read_csv(path: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, list[str]]:
    """Columns `required` (+ any of `optional` present) of a CSV file with a header, as strings.

    A leading unnamed index column (pandas' `to_csv` default) is fine. Raises `UserError` on a
    missing file, a missing column or a short row.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found; expected a CSV file with columns {', '.join(required)}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file; expected a header with columns {', '.join(required)}")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
        cols = [c for c in list(required) + list(optional) if c in header]
        pos = [header.index(c) for c in cols]
        out: dict[str, list[str]] = {c: [] for c in cols}
        last = max(pos)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= last:
                raise UserError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
            for c, p in zip(cols, pos):
                out[c].append(row[p])
    return out


def _bad(path: str, column: str, values: Sequence[str], bad: np.ndarray, expected: str) -> UserError:
    rows = np.flatnonzero(bad)
    shown = ", ".join(f"row {r + 1}: {values[r]!r}" for r in rows[:_SHOW])
    more = f" (and {len(rows) - _SHOW} more)" if len(rows) > _SHOW else ""
    return UserError(f"{path}: column {column} must be {expected}; got {shown}{more}")


def parse_ints(values: Sequence[str], path: str, column: str, allowed: Iterable[int]) -> np.ndarray:
    """Integers from strings (e.g. "1", "1.0", "-1"), each in `allowed`, as int64."""
    allowed = sorted(set(allowed))
    out = np.zeros(len(values), np.int64)
    bad = np.zeros(len(values), bool)
    ok_set = set(allowed)
    for i, v in enumerate(values):
        try:
            f = float(v)
            out[i] = int(f)
            bad[i] = f != out[i] or out[i] not in ok_set
        except (ValueError, OverflowError):
            bad[i] = True
    if bad.any():
        raise _bad(path, column, values, bad, f"one of {allowed}")
    return out


def parse_floats(values: Sequence[str], path: str, column: str, lo: float, hi: float,
                 empty: float | None = None) -> np.ndarray:
    """Floats in `[lo, hi]`; empty strings become `empty` when given, else they are an error."""
    out = np.zeros(len(values), np.float64)
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if not v.strip() and empty is not None:
            out[i] = empty
            continue
        try:
            out[i] = float(v)
            bad[i] = not lo <= out[i] <= hi
        except ValueError:
            bad[i] = True
    if bad.any():
        raise _bad(path, column, values, bad, f"a number in [{lo}, {hi}]")
    return out


def parse_codes(values: Sequence[str], path: str, column: str, codes: Mapping[str, int]) -> np.ndarray:
    """Map string codes (e.g. split names) to integers; unknown codes are an error."""
    out = np.zeros(len(values), np.int64)
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        c = codes.get(v.strip())
        if c is None:
            c = codes.get(_int_text(v))
        if c is None:
            bad[i] = True
        else:
            out[i] = c
    if bad.any():
        raise _bad(path, column, values, bad, f"one of {', '.join(codes)}")
    return out


def _int_text(v: str) -> str:
    """'1.0' -> '1' so that float-formatted integer codes match."""
    try:
        f = float(v)
    except ValueError:
        return v
    return str(int(f)) if f == int(f) else v


def check_images(root: str, files: Sequence[str], what: str = "image") -> None:
    """`UserError` naming the missing files (relative to `root`) if any does not exist."""
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing:
        shown = ", ".join(missing[:_SHOW])
        more = f" (and {len(missing) - _SHOW} more)" if len(missing) > _SHOW else ""
        raise UserError(f"{root}: {len(missing)} {what} file(s) listed in the metadata are missing: {shown}{more}")


def split_indices(split: np.ndarray, path: str) -> dict[str, np.ndarray]:
    """Row indices of train/val/test (codes 0/1/2); every split must be non-empty."""
    out = {s: np.flatnonzero(split == i) for i, s in enumerate(SPLITS)}
    empty = [s for s, idx in out.items() if len(idx) == 0]
    if empty:
        raise UserError(f"{path}: split(s) {', '.join(empty)} have no rows; expected rows in train, val and test")
    return out


def report_counts(ds: GroupDataset, known: Mapping[str, Sequence[int]] | None = None,
                  known_totals: Mapping[str, int] | None = None, verbose: bool = True,
                  log: Callable[[str], None] = print) -> bool:
    """Print the per-split per-group counts; warn when they differ from the known ones.

    Returns True when every given expectation holds (or none is given); prints only if `verbose`.
    """
    if not verbose:
        log = _quiet
    log(f"{ds.name}: group counts per split\n{ds.count_table()}")
    ok = True
    if known is not None:
        ok = ds.check_counts(known, log=log)
    for s, n in (known_totals or {}).items():
        got = len(ds.split(s))
        if got != n:
            ok = False
            log(f"warning: {ds.name} {s} has {got} examples, the known split has {n}")
    return ok


def _quiet(_: str) -> None:
    """A `log` that discards its message."""
