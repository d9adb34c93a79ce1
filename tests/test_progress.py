"""Progress when stderr is not a terminal: log lines per epoch/stage with rate and ETA."""
from __future__ import annotations

import io
import json
import re

from tqdm import tqdm

from gradtune_jax.progress import LogProgress, format_seconds, progress


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 42, 100, 3599, 7500)] == ["0s", "42s", "1m40s", "59m59s", "2h05m"]


def test_epoch_lines_have_rate_and_eta():
    clock, buf = FakeClock(), io.StringIO()
    bar = LogProgress(total=30 * 10, desc="ERM seed 0", unit="step", steps_per_epoch=10, file=buf, clock=clock)
    for epoch in range(3):
        clock.t += 2.0  # 10 steps in 2 s: 5 step/s
        bar.update(10)
        bar.set_postfix(loss=f"{0.5 - 0.1 * epoch:.3f}", acc="0.880")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert lines == [
        "ERM seed 0: epoch 1/30  loss 0.500  acc 0.880  5 step/s  ETA 58s",
        "ERM seed 0: epoch 2/30  loss 0.400  acc 0.880  5 step/s  ETA 56s",
        "ERM seed 0: epoch 3/30  loss 0.300  acc 0.880  5 step/s  ETA 54s",
    ]


def test_resumed_run_counts_only_new_steps_in_the_rate():
    clock, buf = FakeClock(), io.StringIO()
    bar = LogProgress(total=100, initial=50, desc="ERM", unit="step", steps_per_epoch=10, file=buf, clock=clock)
    clock.t += 10.0
    bar.update(10)
    bar.set_postfix(loss="0.1")
    assert buf.getvalue() == "ERM: epoch 6/10  loss 0.1  1 step/s  ETA 40s\n"


def test_stage_lines_are_throttled_and_end_with_a_summary():
    clock, buf = FakeClock(), io.StringIO()
    bar = LogProgress(range(10), desc="TRAK checkpoints", interval=30.0, file=buf, clock=clock)
    for _ in bar:
        clock.t += 10.0  # a line at most every 30 s: after items 3, 6, 9; none when finished
    lines = buf.getvalue().splitlines()
    assert lines[0] == "TRAK checkpoints: 3/10 it  0.1 it/s  ETA 1m10s"
    assert len(lines) == 4 and lines[-1] == "TRAK checkpoints: done 10/10 it in 1m40s  0.1 it/s"


def test_instant_stages_write_nothing():
    clock, buf = FakeClock(), io.StringIO()
    for _ in LogProgress(range(3), desc="features val", file=buf, clock=clock):
        clock.t += 0.1
    assert buf.getvalue() == ""


def test_progress_picks_bar_log_or_silence():
    buf = io.StringIO()  # not a TTY
    assert isinstance(progress(total=3, desc="x", file=buf), LogProgress)
    silent = progress(total=3, desc="x", enabled=False, file=buf)
    assert isinstance(silent, tqdm) and silent.disable
    silent.update()
    silent.set_postfix(loss=1)
    silent.close()
    assert buf.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar = progress(total=3, desc="x", file=Tty())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


def test_fit_logs_one_line_per_epoch_when_not_a_tty(small_digits, capsys):
    from gradtune_jax.methods.erm import init_state
    from gradtune_jax.train.loop import fit
    from gradtune_jax.train.recipe import Recipe

    recipe = Recipe("tiny_cnn", epochs=2, batch_size=32)
    capsys.readouterr()
    fit(init_state(small_digits, recipe, 0), small_digits.train, recipe, seed=0, desc="ERM seed 0", progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ERM seed 0:")]
    assert len(lines) == 2
    for e, ln in enumerate(lines, 1):
        assert re.fullmatch(rf"ERM seed 0: epoch {e}/2  loss \d+\.\d{{3}}  acc \d\.\d{{3}}  \S+ step/s  ETA \S+", ln), ln
    assert lines[-1].endswith("ETA 0s")


def test_table1_quick_logs_progress_without_a_tty(tmp_path, capsys):
    """The CLI's default (no --no-progress) under a non-TTY stderr: ERM epoch lines with ETA."""
    from experiments import common, table1

    out = tmp_path / "q"
    assert common.run_cli(table1.main, ["--quick", "--methods", "erm,gradtune", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redraws in a log
    epochs = [ln for ln in err.splitlines() if ln.startswith("ERM seed 0: epoch ")]
    assert [ln.split()[4] for ln in epochs] == ["1/2", "2/2"] and all("ETA" in ln for ln in epochs)
    assert json.loads((out / "results.json").read_text())["per_seed"]["gradtune"]["0"]["metrics"]["wga"] >= 0
    capsys.readouterr()
    assert common.run_cli(table1.main, ["--quick", "--methods", "erm", "--out", str(out), "--no-progress"]) == 0
    assert "ETA" not in capsys.readouterr().err  # --no-progress silences
