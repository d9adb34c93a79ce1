"""Shared CLI plumbing: one-line errors with exit status 2, versions, tables, atomic outputs.

Every CLI's parser takes the multi-process options (`--coordinator HOST:PORT --num-processes N
--process-id I`, else auto-detected; `gradtune_jax.distributed`) and starts `jax.distributed`
while parsing, before any JAX computation. In a multi-process job only process 0 writes the
outputs (`atomic_write_text`, `atomic_write_json`, `write_csv` here) and prints to stdout.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import traceback
from typing import Callable, Sequence

import numpy as np

from gradtune_jax import io as _io
from gradtune_jax.distributed import add_arguments as _add_distributed_arguments
from gradtune_jax.distributed import initialize_from_args
from gradtune_jax.errors import UserError

PACKAGES = ("gradtune-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scikit-learn",
            "transformers", "tensorflow-datasets")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2, and the
    multi-process options: parsing starts `jax.distributed` when they (or the environment) ask."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _add_distributed_arguments(self)

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        initialize_from_args(ns)
        return ns, rest

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def is_primary() -> bool:
    """True unless this is a non-zero process of a multi-process job (which writes no outputs)."""
    import jax

    return jax.process_index() == 0


def atomic_write_text(path: str, text: str) -> None:
    """`gradtune_jax.io.atomic_write_text` on the primary process; nothing on the others."""
    if is_primary():
        _io.atomic_write_text(path, text)


def atomic_write_json(path: str, obj) -> None:
    """`gradtune_jax.io.atomic_write_json` on the primary process; nothing on the others."""
    if is_primary():
        _io.atomic_write_json(path, obj)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main`, turning `UserError` into one line on stderr and exit status 2."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with the same --out to resume", file=sys.stderr)
        return 130
    except Exception:  # a bug, not bad input: keep the traceback
        traceback.print_exc()
        return 1


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    try:
        import jax

        out["devices"] = [str(d) for d in jax.devices()]
    except Exception:  # pragma: no cover - reporting only
        pass
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (numpy's default, ddof=0) over seeds."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std())


def pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def parse_seeds(text: str) -> list[int]:
    """`"0,1,2"` or `"0-2"` -> [0, 1, 2]."""
    try:
        if "-" in text and "," not in text:
            a, b = (int(t) for t in text.split("-"))
            seeds = list(range(a, b + 1))
        else:
            seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be like '0,1,2' or '0-2', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers, got {text!r}")
    return seeds


def _positive(cast: Callable[[str], float], what: str) -> Callable[[str], float]:
    """An argparse `type` that parses with `cast` and accepts only values > 0."""

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return v

    parse.__name__ = f"positive {what}"
    return parse


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


__all__ = ["ArgumentParser", "run_cli", "versions", "mean_std", "pm", "markdown_table", "write_csv",
           "parse_seeds", "positive_int", "positive_float", "atomic_write_json", "atomic_write_text", "is_primary"]
