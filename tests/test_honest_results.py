"""results.json tells the truth about a run: reused work keeps its original compute time and says
it was reused; |D| <= M' is stated for every method that subsamples D."""
from __future__ import annotations

import json

import pytest

from experiments import common, table1
from experiments.runner import heldout_note

# the --quick held-out set D has 60 examples; --size 60 makes |D| == M'
ARGV = ["--quick", "--no-progress", "--methods", "erm,random_finetune,gradtune", "--size", "60"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same command twice in one --out: (first results, first stdout, second results, second stdout)."""
    out = tmp_path_factory.mktemp("honest") / "out"
    runs = []
    for _ in range(2):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert common.run_cli(table1.main, ARGV + ["--out", str(out)]) == 0
        runs += [json.loads((out / "results.json").read_text()), buf.getvalue()]
    return runs


def test_rerun_keeps_original_seconds_and_says_reused(two_runs):
    first, _, second, out2 = two_runs
    assert "reusing cached ERM features" in out2
    for m in ("erm", "random_finetune", "gradtune"):
        a, b = first["per_seed"][m]["0"], second["per_seed"][m]["0"]
        assert a["reused"] is False and b["reused"] is True, m
        assert b["seconds"] == a["seconds"] > 0, m  # the compute time, not the resume's ~0.02 s
        assert b["metrics"] == a["metrics"], m


def test_heldout_not_larger_than_size_is_stated_in_log_and_results(two_runs):
    first, out1, _, _ = two_runs
    note = "held-out set D has 60 examples = M'=60: GradTune and Random finetune both fine-tune on all of D"
    assert note in out1
    for m in ("random_finetune", "gradtune"):
        assert first["per_seed"][m]["0"]["heldout_note"].startswith(note), m
    assert "heldout_note" not in first["per_seed"]["erm"]["0"]  # ERM does not subsample D


def test_heldout_note_cases():
    assert heldout_note(599, 500, ["erm", "random_finetune", "gradtune"]) is None  # |D| > M': nothing to say
    assert heldout_note(40, 500, ["erm", "dfr"]) is None  # no method subsamples D
    assert heldout_note(40, 50, ["gradtune"]) == \
        "held-out set D has 40 examples < M'=50: GradTune fine-tunes on all of D (no subsampling)"
    assert "SELF's sizes >= 40 all use all of D" in heldout_note(40, 40, ["self"])
