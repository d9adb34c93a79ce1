"""Atomic outputs: content replaced whole, mode from the umask, writable-folder checks."""
from __future__ import annotations

import os
import stat

import pytest

from gradtune_jax.errors import UserError
from gradtune_jax.io import atomic_save_npz, atomic_write_json, atomic_write_text, ensure_writable_dir, file_mode


@pytest.fixture
def umask():
    """Set the umask for one test, restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert file_mode() == expected
    atomic_write_text(str(tmp_path / "a.txt"), "x")
    atomic_write_json(str(tmp_path / "b.json"), {"a": 1})
    atomic_save_npz(str(tmp_path / "c.npz"), x=__import__("numpy").zeros(3))
    for name in ("a.txt", "b.json", "c.npz"):
        assert _mode(tmp_path / name) == expected, name
    # the same mode as a plain open() gives under this umask
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert _mode(tmp_path / "plain.txt") == expected


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(str(path), {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"v": object()})
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert os.listdir(tmp_path) == ["r.json"]  # no temp file left behind


def test_ensure_writable_dir_creates_and_accepts(tmp_path):
    target = tmp_path / "a" / "b"
    assert ensure_writable_dir(str(target), "--out") == str(target)
    assert target.is_dir() and os.listdir(target) == []  # the probe file is gone


@pytest.mark.parametrize("case", ["file", "under_file", "proc"])
def test_ensure_writable_dir_refuses(tmp_path, case):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    path = {"file": str(f), "under_file": str(f / "x"), "proc": "/proc/gradtune_x"}[case]
    with pytest.raises(UserError) as e:
        ensure_writable_dir(path, "--out")
    msg = str(e.value)
    assert msg.startswith(f"--out {path}:") and "\n" not in msg and "folder" in msg
    assert f.read_text() == "keep"


def test_ensure_writable_dir_refuses_a_read_only_folder(tmp_path, monkeypatch):
    """A folder that exists but cannot be written (simulated: tests may run as root, who can
    write anywhere) is refused by the probe file."""
    import gradtune_jax.io as gio

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gio.tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match=r"^--erm-cache .*: cannot write in the folder \(Permission denied\)"):
        ensure_writable_dir(str(tmp_path), "--erm-cache")
