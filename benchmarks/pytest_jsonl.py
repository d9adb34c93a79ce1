"""pytest plugin for `gpu_check.sh`: one JSON line per test outcome, written as it happens.

    GPU_CHECK_PYTEST_JSONL=out.jsonl python -m pytest -p benchmarks.pytest_jsonl ...

Unlike `--junitxml` (written at the end of the session), the file survives a run killed by a
time limit. Lines: `{"nodeid", "when", "outcome", "duration", "message"?}` for every test's call
phase and for any setup/teardown phase that did not pass, plus `{"nodeid", "when": "collect",
"outcome": "failed", "message"}` per collection error. Works under pytest-xdist (the controller
receives every report). The first line is `{"when": "session", "rootdir"}`: node ids are
relative to it. Does nothing when the variable is unset.
"""
from __future__ import annotations

import json
import os
from typing import Any

ENV = "GPU_CHECK_PYTEST_JSONL"


def _message(report: Any) -> str:
    """The most telling line of a failure: the first `E ...` line (exception and message), else the last line."""
    lines = [ln.strip() for ln in str(getattr(report, "longreprtext", "") or report.longrepr).splitlines()
             if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "")[:400]


def _write(record: dict) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def pytest_sessionstart(session: Any) -> None:
    """Record the rootdir the node ids are relative to (needed to rerun them from elsewhere)."""
    if not hasattr(session.config, "workerinput"):  # the xdist controller (or a plain run) only
        _write({"when": "session", "rootdir": str(session.config.rootpath)})


def pytest_runtest_logreport(report: Any) -> None:
    """Record the call phase of every test, and setup/teardown phases that did not pass."""
    if report.when == "call" or report.outcome != "passed":
        rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
               "duration": round(report.duration, 3)}
        if report.outcome != "passed":
            rec["message"] = _message(report)
        _write(rec)


def pytest_collectreport(report: Any) -> None:
    """Record collection errors (a module that does not import on this machine)."""
    if report.failed:
        _write({"nodeid": report.nodeid, "when": "collect", "outcome": "failed", "message": _message(report)})
