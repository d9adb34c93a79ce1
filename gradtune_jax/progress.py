"""Progress for every long loop: a tqdm bar on a terminal, log lines everywhere else.

`progress(...)` takes tqdm's main arguments and returns a tqdm bar when stderr is a TTY (or in a
notebook), and otherwise a `LogProgress`: the same interface (`update`, `set_postfix`, iteration,
`close`, context manager), writing one line to stderr per epoch (when `steps_per_epoch` is given,
at each `set_postfix`, which the epoch loop calls once per epoch) or at most one every `interval`
seconds, plus one when a stage of at least `min_seconds` ends, each with the rate and the time left:

    ERM seed 0: epoch 3/30  loss 0.412  acc 0.880  12.3 step/s  ETA 1m40s
    TRAK checkpoints: 2/3 it  0.05 it/s  ETA 21s
    TRAK checkpoints: done 3/3 it in 1m02s  0.05 it/s

so a batch job's log (CI, `| tee`, a cluster's stdout file) shows how far a run is. With
`enabled=False` it returns a disabled tqdm (silent, same interface).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

from tqdm import tqdm

__all__ = ["LogProgress", "format_seconds", "progress", "use_bars"]


def use_bars(stream: TextIO | None = None) -> bool:
    """Whether to draw tqdm bars: `stream` (default stderr) is a terminal, or we run in a notebook."""
    stream = sys.stderr if stream is None else stream
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def format_seconds(s: float) -> str:
    """`42s`, `1m40s`, `2h05m`."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _format_rate(r: float) -> str:
    return f"{r:.3g}" if r < 100 else f"{r:.0f}"


class LogProgress:
    """A tqdm-compatible progress object that writes plain log lines (see the module docstring)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", steps_per_epoch: int | None = None, interval: float = 30.0,
                 min_seconds: float = 1.0, file: TextIO | None = None, clock=time.monotonic):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.initial, self.n = iterable, total, initial, initial
        self.desc, self.unit, self.steps_per_epoch, self.interval = desc, unit, steps_per_epoch, interval
        self.min_seconds = min_seconds
        self.file, self.clock = file, clock
        self.postfix = ""
        self.t_start = self.t_last = clock()
        self.lines = 0
        self.closed = False
        self._last_epoch_logged = -1

    # -- tqdm interface ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:  # type: ignore[union-attr]
                yield item
                self.update()
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.steps_per_epoch is None and now - self.t_last >= self.interval and not self._finished():
            self._log(self._position())

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = "  ".join(f"{k} {v}" for k, v in items.items())
        if self.steps_per_epoch:
            epoch = self.n // self.steps_per_epoch
            if epoch > 0 and epoch != self._last_epoch_logged:
                self._last_epoch_logged = epoch
                self._log(self._position())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=self._stream(), flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        done = self.n - self.initial
        if done <= 0:
            return
        if self.steps_per_epoch and self._last_epoch_logged == self.n // self.steps_per_epoch:
            return  # the last epoch line already said where it ended
        elapsed = self.clock() - self.t_start
        if elapsed < self.min_seconds and not self.lines:
            return  # an instant stage (a small eval pass) is not worth a log line
        total = f"/{self.total}" if self.total else ""
        rate = f"  {_format_rate(done / elapsed)} {self.unit}/s" if elapsed > 0 else ""
        self._log(f"done {self.n}{total} {self.unit} in {format_seconds(elapsed)}{rate}")

    # -- helpers ----------------------------------------------------------------------------------
    def _finished(self) -> bool:
        return self.total is not None and self.n >= self.total

    def rate(self) -> float | None:
        """Units per second since this object was created (resumed work not counted)."""
        elapsed = self.clock() - self.t_start
        done = self.n - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def _position(self) -> str:
        if self.steps_per_epoch and self.total:
            where = f"epoch {self.n // self.steps_per_epoch}/{-(-self.total // self.steps_per_epoch)}"
        else:
            where = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [where] + ([self.postfix] if self.postfix else [])
        r = self.rate()
        parts.append(f"{_format_rate(r)} {self.unit}/s" if r else f"? {self.unit}/s")
        if self.total is not None:
            parts.append(f"ETA {format_seconds((self.total - self.n) / r)}" if r else "ETA ?")
        return "  ".join(parts)

    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def _log(self, text: str) -> None:
        self.t_last = self.clock()
        self.lines += 1
        prefix = f"{self.desc}: " if self.desc else ""
        print(prefix + text, file=self._stream(), flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, initial: int = 0, leave: bool = False, steps_per_epoch: int | None = None,
             interval: float = 30.0, file: TextIO | None = None) -> Any:
    """A progress bar over `iterable` (or `total` units, advanced with `update`).

    Args:
      enabled: False = silent (`--no-progress`).
      steps_per_epoch: units per epoch; in log mode each `set_postfix` call (once per epoch in the
        epoch loop) writes `desc: epoch e/E  <postfix>  <rate>  ETA`.
      interval: in log mode without epochs, the least seconds between two lines.
      file: where lines/bars go (default stderr; its TTY-ness picks bar or log lines).
    """
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if use_bars(file):
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                         dynamic_ncols=True, file=file)
    return LogProgress(iterable, total=total, initial=initial, desc=desc, unit=unit,
                       steps_per_epoch=steps_per_epoch, interval=interval, file=file)
