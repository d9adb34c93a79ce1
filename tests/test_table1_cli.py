import csv
import json
import os
import subprocess
import sys

import pytest

from experiments import table1

TINY = ["--seeds", "0,1", "--erm-epochs", "1", "--ft-epochs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("t1")
    assert table1.main(TINY + ["--out", str(out)]) == 0
    return out


def test_cli_writes_table_csv_and_results(tiny_run, capsys):
    out = tiny_run
    with open(out / "table1.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dataset", "method", "avg_mean", "avg_std", "wga_mean", "wga_std"]
    assert [r[1] for r in rows[1:]] == ["erm", "random_finetune", "gradtune"]
    for r in rows[1:]:
        assert r[0] == "digits" and 0.0 <= float(r[2]) <= 100.0 and float(r[4]) <= float(r[2]) + 1e-9
    md = (out / "table1.md").read_text()
    assert "| GradTune | no/no |" in md and "WGA" in md
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["recipe"]["epochs"] == 1 and res["recipe"]["models"]["init"] == {"source": "random"}
    assert res["versions"]["jax"] and res["group_label_regime"]["gradtune"]["group_labels_train_val"] == "no/no"
    per = res["per_seed"]["gradtune"]
    assert set(per) == {"0", "1"} and len(per["0"]["metrics"]["group_acc"]) == 4


def test_cli_rerun_reuses_cache_and_is_reproducible(tiny_run, capsys):
    before = (tiny_run / "table1.csv").read_text()
    assert table1.main(TINY + ["--out", str(tiny_run)]) == 0
    assert "reusing cached ERM features" in capsys.readouterr().out
    assert (tiny_run / "table1.csv").read_text() == before


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.table1", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("args,needle", [
    (["--seeds", "a,b"], "--seeds"),
    (["--dataset", "nope"], "--dataset"),
    (["--ft-lr", "-1"], "--ft-lr"),
    (["--methods", "erm,bogus"], "--methods"),
    (["--size", "10", "--k", "20"], "--k"),
])
def test_bad_arguments_one_line_exit_2(args, needle, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "table1.csv").write_text("keep me\n")
    r = _cli(*args, "--out", str(out))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert (out / "table1.csv").read_text() == "keep me\n"  # nothing already written is lost


def test_help_lists_every_option():
    r = _cli("--help")
    assert r.returncode == 0
    for opt in ("--dataset", "--seeds", "--methods", "--out", "--size", "--k", "--ft-epochs", "--ft-lr",
                "--erm-epochs", "--retrain", "--selection"):
        assert opt in r.stdout


def test_cli_on_generated_waterbirds_folder(tmp_path):
    from gradtune_jax.data.synthetic import write_waterbirds_folder

    data = tmp_path / "wb"
    write_waterbirds_folder(str(data), counts={"train": (30, 6, 6, 30), "val": (8, 8, 8, 8), "test": (8, 8, 8, 8)},
                            image_size=20, seed=0)
    out = tmp_path / "out"
    r = _cli("--dataset", "waterbirds", "--data-dir", str(data), "--model", "tiny_cnn", "--image-size", "16",
             "--seeds", "0", "--erm-epochs", "1", "--ft-epochs", "2", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (out / "table1.csv").read_text().splitlines()
    assert rows[1].startswith("waterbirds,erm,") and len(rows) == 4


def test_cli_on_features_npz(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    n, d = 300, 6
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.8, y, 1 - y)
    feats = rng.normal(size=(n, d)) + 2.0 * y[:, None] * np.eye(d)[0] + 2.0 * a[:, None] * np.eye(d)[1]
    split = np.repeat([0, 1, 2], n // 3)
    np.savez(tmp_path / "f.npz", features=feats.astype(np.float32), y=y, a=a, split=split)
    out = tmp_path / "out"
    assert table1.main(["--dataset", "features", "--data-dir", str(tmp_path / "f.npz"), "--seeds", "0",
                        "--erm-epochs", "2", "--ft-epochs", "2", "--out", str(out), "--no-progress"]) == 0
    assert (out / "table1.csv").read_text().count("features,") == 3


def test_missing_data_dir_is_one_line_exit_2(tmp_path):
    r = _cli("--dataset", "waterbirds", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
