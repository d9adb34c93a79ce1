"""Caches are keyed by everything that produced them, and a killed run resumes to the same table.

- a changed setting with the same --out retrains (numbers differ; the old entry is left alone);
- --quick and a full-size run share one folder without colliding;
- a run killed with SIGKILL in the middle of ERM resumes from its last checkpoint and writes a
  table byte-identical to an uninterrupted run's.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

from experiments import table1

QUICK = ["--quick", "--no-progress", "--ft-epochs", "5"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _erm_dirs(out):
    return sorted(glob.glob(os.path.join(out, "erm-*")))


def test_changed_setting_same_out_retrains(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert table1.main(QUICK + ["--out", out]) == 0
    first = open(os.path.join(out, "table1.csv")).read()
    (old,) = _erm_dirs(out)
    assert table1.main(QUICK + ["--out", out, "--lr", "0.5"]) == 0
    log = capsys.readouterr().out
    assert "reusing cached ERM features" not in log  # retrained, not restored from the lr-0.01 run
    assert open(os.path.join(out, "table1.csv")).read() != first
    dirs = _erm_dirs(out)
    assert len(dirs) == 2 and old in dirs  # a new entry; the stale one is left alone
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["recipe"]["models"]["optim"]["lr"] == 0.5
    assert all(not r["reused"] for r in res["per_seed"]["erm"].values())
    # the same setting again: every row is reused, with its original compute time
    assert table1.main(QUICK + ["--out", out, "--lr", "0.5"]) == 0
    again = json.load(open(os.path.join(out, "results.json")))
    for m in ("erm", "gradtune"):
        assert again["per_seed"][m]["0"]["reused"] is True
        assert again["per_seed"][m]["0"]["seconds"] == res["per_seed"][m]["0"]["seconds"]


def test_quick_and_full_share_a_folder(tmp_path):
    out = str(tmp_path / "o")
    small = ["--seeds", "0", "--erm-epochs", "1", "--ft-epochs", "3", "--no-progress", "--out", out]
    assert table1.main(small) == 0
    assert table1.main(QUICK + ["--out", out]) == 0
    assert len(_erm_dirs(out)) == 2
    assert table1.main(small) == 0  # the full-size entry is still intact and reused


def _cmd(out):
    return [sys.executable, "-m", "experiments.table1", *QUICK, "--epochs", "60", "--out", out]


def test_sigkill_mid_erm_resumes_to_the_same_table(tmp_path):
    ref = str(tmp_path / "ref")
    assert subprocess.run(_cmd(ref), cwd=ROOT, capture_output=True).returncode == 0
    out = str(tmp_path / "killed")
    proc = subprocess.Popen(_cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a few epoch checkpoints exist
        steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(out, "erm-*", "seed0", "checkpoints", "*"))
                 if os.path.basename(p).isdigit()]
        if steps and max(steps) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "table1.csv")), "the run finished before it could be killed"
    r = subprocess.run(_cmd(out), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("table1.csv", "table1.md"):
        got = open(os.path.join(out, name)).read().replace(out, ref)
        assert got == open(os.path.join(ref, name)).read()
    (folder,) = _erm_dirs(out)
    meta = json.load(open(os.path.join(folder, "seed0", "meta.json")))
    assert [h["epoch"] for h in meta["history"]] == list(range(1, 61))
