"""Atomic file output: write to a temporary file in the same folder, then rename. Outputs get the
mode an ordinary `open(path, "w")` would give (0o666 minus the umask), not mkstemp's 0o600."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

import numpy as np

from gradtune_jax.errors import UserError


def _umask() -> int:
    """The process umask: from /proc/self/status on Linux (no change to process state), else by
    setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new output file: `0o666 & ~umask`, as `open(path, "w")` creates it."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path`; on success it replaces `path` (with mode
    `file_mode()`), on error it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npz(path: str, **arrays: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def ensure_writable_dir(path: str, what: str) -> str:
    """Create folder `path` if needed and check that files can be written in it (a probe file is
    created and removed); otherwise a one-line `UserError` naming `what` (e.g. "--out") and `path`.
    Returns `path`. Call it before any work, so a run never ends on an unwritable output folder."""
    expected = "expected a folder this process can write to"
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path}: exists and is not a folder; {expected}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot create the folder ({e.strerror or e}); {expected}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write in the folder ({e.strerror or e}); {expected}") from None
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
