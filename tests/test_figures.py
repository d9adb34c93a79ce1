"""The figure and ablation commands with --quick on the embedded default: files, table rows, PNGs.

The GradTune commands share one ERM feature cache (trained once for the module)."""
import glob
import importlib
import json
import os

import pytest

from _figures_util import check_png, read_csv

from experiments import ablations, all as run_all, common, finetune_size, gradnorms

GROUPS = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("erm_cache"))


def quick(out, cache, *extra):
    return ["--quick", "--no-progress", "--out", str(out), "--erm-cache", cache, *extra]


def test_gradnorms(tmp_path, cache):
    assert gradnorms.main(quick(tmp_path, cache)) == 0
    rows = read_csv(tmp_path / "gradnorms.csv")
    assert rows[0][:3] == ["dataset", "group", "n_heldout"] and [r[1] for r in rows[1:]] == GROUPS
    assert sum(float(r[6]) for r in rows[1:]) == pytest.approx(100.0, abs=0.1)  # shares of the top-k
    md = (tmp_path / "gradnorms.md").read_text()
    assert "Share of top-32" in md and all(f"| {g} |" in md for g in GROUPS)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["experiment"] == "gradnorms" and res["versions"]["jax"] and res["k"] == 32
    assert res["config"]["recipe"]["model"] == "tiny_cnn" and res["recipe"]["paper"] == "gradtune"
    check_png(tmp_path / "gradnorms.png")


def test_finetune_size(tmp_path, cache, capsys):
    assert finetune_size.main(quick(tmp_path, cache, "--sizes", "10,20")) == 0
    assert "reusing cached ERM features" in capsys.readouterr().out  # no second ERM run
    rows = read_csv(tmp_path / "finetune_size.csv")
    assert [(r[1], r[3]) for r in rows[1:]] == [("", "erm"), ("10", "random_finetune"), ("10", "gradtune"),
                                                ("20", "random_finetune"), ("20", "gradtune")]
    assert rows[2][2] == "8" and all(0 <= float(r[6]) <= float(r[4]) + 1e-9 for r in rows[1:])
    assert "| GradTune, M'=20, k=16 |" in (tmp_path / "finetune_size.md").read_text()
    check_png(tmp_path / "finetune_size.png")


def test_ablations(tmp_path, cache):
    assert ablations.main(quick(tmp_path, cache)) == 0
    for name, middle in (("table4", "class_imbalanced"), ("table5", "retrain")):
        rows = read_csv(tmp_path / f"{name}.csv")
        assert rows[0] == ["dataset", "variant", "avg_mean", "avg_std", "wga_mean", "wga_std"]
        assert [r[1] for r in rows[1:]] == ["erm", middle, "class_balanced"]
        assert (tmp_path / f"{name}.md").read_text().count("\n| ") == 4  # header + 3 rows
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["per_seed"]) == {"erm", "class_imbalanced", "retrain", "class_balanced"}


def test_all_writes_index(tmp_path, cache):
    assert run_all.main(["--quick", "--no-progress", "--out", str(tmp_path), "--only", "gradnorms,ablations"]) == 0
    index = (tmp_path / "index.md").read_text()
    for link in ("gradnorms/gradnorms.md", "gradnorms/gradnorms.png", "ablations/table4.md", "ablations/table5.csv"):
        assert f"({link})" in index
        assert (tmp_path / link).exists()
    assert glob.glob(str(tmp_path / "erm" / "erm-*" / "seed0" / "features.npz"))  # the shared cache


@pytest.mark.parametrize("module,args,needle", [
    ("gradnorms", ["--seeds", "x"], "--seeds"),
    ("finetune_size", ["--sizes", "0,5"], "--sizes"),
    ("ablations", ["--size", "10", "--k", "20"], "--k"),
    ("attribution", ["--curve", "-1"], "--curve"),
    ("all", ["--only", "table9"], "--only"),
])
def test_bad_arguments_one_line_exit_2(module, args, needle, tmp_path, capsys):
    main = importlib.import_module(f"experiments.{module}").main
    try:
        rc = common.run_cli(main, [*args, "--out", str(tmp_path)])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not os.listdir(tmp_path)  # nothing written
