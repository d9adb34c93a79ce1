"""experiments.attribution with --quick: Fig. 2 curve (K* and group balancing), appendix F
subpopulations, image grids, resume."""
import json

from _figures_util import check_png, read_csv

from experiments import attribution


def test_attribution_quick(tmp_path, capsys):
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--curve", "1", "--no-random"]
    assert attribution.main(argv) == 0
    rows = read_csv(tmp_path / "removal_curve.csv")
    assert rows[0] == ["dataset", "seed", "removal", "k", "wga", "bal_acc", "avg"]
    res = json.loads((tmp_path / "results.json").read_text())
    k_star = res["k_star"]
    assert sorted((r[2], int(r[3])) for r in rows[1:]) == sorted(
        [("trak", 0), ("trak", k_star), ("balance", 200 - 4 * 8)])  # quick train: 200, smallest group 8
    sub = read_csv(tmp_path / "subpopulations.csv")[1:]
    assert len(sub) == 4 and {r[3] for r in sub} == {"land", "water"}  # class x spurious attribute
    means = [float(r[5]) for r in sub]
    assert means == sorted(means)  # most negative first
    md = (tmp_path / "attribution.md").read_text()
    assert "T < 0 heuristic" in md and "ARI" in md and len(res["pc_extremes"]) == 4
    for png in ("removal_curve.png", "subpopulations.png", "most_negative.png", "auto_trak_pca.png"):
        check_png(tmp_path / png)
    capsys.readouterr()
    assert attribution.main(argv) == 0  # resumes: no TRAK and no retraining
    assert "reusing TRAK scores" in capsys.readouterr().out
