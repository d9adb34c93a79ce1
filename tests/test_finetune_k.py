"""`experiments.finetune_size --ks`: GradTune's appendix Fig. 5 (k varies at a fixed M')."""
import json

import pytest
from _figures_util import check_png, read_csv

from experiments import common, finetune_size


def test_ks_at_fixed_size(tmp_path, capsys):
    args = ["--quick", "--no-progress", "--out", str(tmp_path), "--ks", "30,0,10", "--size", "30"]
    assert finetune_size.main(args) == 0
    rows = read_csv(tmp_path / "finetune_size.csv")
    assert rows[0] == list(finetune_size.CSV_COLUMNS)
    # ERM, Random finetune at M' (independent of k), then GradTune per k in increasing order, all at M' = 30
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("", "", "erm"), ("30", "", "random_finetune"), ("30", "0", "gradtune"), ("30", "10", "gradtune"),
        ("30", "30", "gradtune")]
    assert all(0 <= float(r[6]) <= float(r[4]) + 1e-9 for r in rows[1:])  # WGA <= average
    md = (tmp_path / "finetune_size.md").read_text()
    assert "| GradTune, M'=30, k=10 |" in md and "Worst group" in md
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["ks"] == [0, 10, 30] and res["size"] == 30
    assert set(res["per_seed"]) == {"erm", "random_finetune", "gradtune@k0", "gradtune@k10", "gradtune@k30"}
    check_png(tmp_path / "finetune_size.png")


@pytest.mark.parametrize("args,needle", [
    (["--ks", "5,41"], "--ks"),                       # k above M' (40 under --quick)
    (["--ks", "5", "--sizes", "10,20"], "--sizes"),   # one mode at a time
    (["--size", "20"], "--size"),                     # --size belongs to --ks
    (["--ks", "-1"], "--ks"),
])
def test_ks_bad_arguments_one_line_exit_2(args, needle, tmp_path, capsys):
    try:
        rc = common.run_cli(finetune_size.main, ["--quick", "--no-progress", *args, "--out", str(tmp_path / "o")])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    out = tmp_path / "o"
    assert not out.exists() or not any(out.iterdir())  # nothing written
