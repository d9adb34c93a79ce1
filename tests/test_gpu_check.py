"""The GPU check's pieces on CPU: report assembly, the pytest JSONL plugin, trace parsing, gradnorm bench."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(path, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if isinstance(obj, list):
            f.write("".join(json.dumps(r) + "\n" for r in obj) + '{"cut by a kill')
        else:
            json.dump(obj, f)


def test_report_assembles_figures_ratios_and_missing_steps(tmp_path, monkeypatch):
    report = load("gpu_check_report")
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    write(str(work / "env.json"), {"nvidia_smi": "NVIDIA H200, 580.1, 143771 MiB, 1980 MHz", "backend": "gpu",
                                   "jax_devices": ["cuda:0"], "packages": {"jax": "0.11.2", "torch": "2.11.0"}})
    write(str(work / "steps.jsonl"), [{"key": "env", "status": "ok", "seconds": 3},
                                      {"key": "pytest", "status": "failed", "seconds": 50},
                                      {"key": "table1", "status": "timeout", "reason": "killed at its 120s cap",
                                       "seconds": 120}])
    write(str(work / "pytest.jsonl"), [
        {"nodeid": "t.py::a", "when": "call", "outcome": "passed"},
        {"nodeid": "t.py::b", "when": "call", "outcome": "failed", "message": "E   assert 1 == 2"},
        {"nodeid": "t.py::c", "when": "setup", "outcome": "failed", "message": "E   boom"},
        {"nodeid": "t.py::d", "when": "setup", "outcome": "skipped"},
        {"nodeid": "u.py", "when": "collect", "outcome": "failed", "message": "E   ModuleNotFoundError: tfds"}])
    write(str(work / "pytest_cpu.jsonl"), [{"nodeid": "t.py::b", "when": "call", "outcome": "passed"},
                                           {"nodeid": "t.py::c", "when": "setup", "outcome": "failed"}])
    row = {"arch": "resnet50", "dtype": "bf16", "batch_size": 256, "image_size": 224, "jax_step_ms": 1.0,
           "jax_warmup_s": 1.0}
    write(str(work / "resnet50_jit.json"), {"meta": {"image_size": 224}, "torch": {"used": True, "reason": ""},
                                            "rows": [{**row, "parallel": "jit", "jax": 3000.0, "torch": 2000.0,
                                                      "torch_step_ms": 2.0, "ratio": 1.5}]})
    write(str(work / "resnet50_pmap.json"), {"meta": {"image_size": 224}, "torch": {"used": False, "reason": "x"},
                                             "rows": [{**row, "parallel": "pmap", "jax": 1000.0}]})
    write(str(work / "trak.json"), {"rows": [
        {"model": "resnet18", "projector": "dense", "examples_per_s": 10.0, "peak_mib": 200.0},
        {"model": "resnet18", "projector": "factorized", "examples_per_s": 40.0, "peak_mib": 100.0},
        {"model": "resnet18", "ratio_factorized_over_dense": 4.0},
        {"model": "resnet18", "projector": "traker 0.3.2 (dense)", "examples_per_s": 20.0, "peak_mib": 400.0}]})
    monkeypatch.setenv("SMOKE", "0")
    assert report.main([str(work), str(out)]) == 0
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["device"]["name"] == "NVIDIA H200" and rep["results_name"].startswith("nvidia-h200-")
    p = rep["figures"]["1_pytest"]
    assert (p["passed"], p["failed"], p["error"], p["skipped"]) == (1, 1, 1, 1)
    assert p["gpu_only_failures"] == 1 and len(p["collection_errors"]) == 1
    assert {f["nodeid"]: f["on_cpu_same_machine"] for f in p["failures"]} == {"t.py::b": "passed", "t.py::c": "failed"}
    rows = rep["figures"]["3_resnet50"]["rows"]
    assert [(r["parallel"], r["ratio"]) for r in rows] == [("jit", 1.5), ("pmap", 0.5)]  # pmap vs the jit run's torch
    assert rep["figures"]["5_trak"]["vs_traker"] == {"dense": {"throughput": 0.5, "peak_mib": 0.5},
                                                     "factorized": {"throughput": 2.0, "peak_mib": 0.25}}
    assert rep["headline"]["3_resnet50"]["bf16-256-pmap"] == {"jax_img_s": 1000.0, "jax_over_torch": 0.5}
    assert rep["headline"]["5_trak"]["factorized_over_dense"] == 4.0
    assert rep["headline"]["1_pytest"] == {"passed": 1, "failed": 2, "collection_errors": 1, "gpu_only_failures": 1}
    assert "2_table1" not in rep["headline"]
    assert rep["figures"]["2_table1"] == {"missing": "table1: timeout killed at its 120s cap"}
    assert rep["figures"]["4_gradnorm"] == {"missing": "not run (not selected)"}
    text = (out / "summary.txt").read_text()
    assert "rerun with: bash benchmarks/gpu_check.sh --only 2" in text and "[passed]" in text


def test_report_compares_table1_with_the_cpu_reference(tmp_path, monkeypatch):
    report = load("gpu_check_report")
    ref = json.loads(open(report.REFERENCE).read())["table1_digits"]
    erm = next(r for r in ref["summary"] if r["method"] == "erm")
    summary = [{"method": "erm", "avg_mean": erm["avg_mean"] + 1.0, "avg_std": 0.0,
                "wga_mean": erm["wga_mean"] + 30.0, "wga_std": 0.0}]
    write(str(tmp_path / "table1" / "results.json"), {"dataset": "digits", "seconds": ref["seconds"] / 4,
                                                      "config": {"seeds": [0, 1, 2]}, "summary": summary})
    monkeypatch.setenv("SMOKE", "0")
    fig = report.table1_figure(str(tmp_path), smoke=False)
    row = fig["rows"][0]
    assert row["delta_avg"] == pytest.approx(1.0) and row["avg_within_2sd"] is True
    assert row["delta_wga"] == pytest.approx(30.0) and row["wga_within_2sd"] is False
    assert fig["cpu_seconds_over_device_seconds"] == pytest.approx(4.0)
    assert "cpu_wga_mean" not in report.table1_figure(str(tmp_path), smoke=True)["rows"][0]


def test_pytest_plugin_writes_one_line_per_outcome(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.mark.skip(reason='no')\n"
        "def test_skip():\n    pass\n")
    (tmp_path / "test_broken.py").write_text("import no_such_module_here\n")
    jsonl = tmp_path / "out.jsonl"
    env = {**os.environ, "GPU_CHECK_PYTEST_JSONL": str(jsonl), "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                           "benchmarks.pytest_jsonl", "--continue-on-collection-errors", str(tmp_path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines[0] == {"when": "session", "rootdir": str(tmp_path)}
    recs = {r["nodeid"].split("::")[-1]: r for r in lines[1:]}
    assert recs["test_ok"]["outcome"] == "passed"
    assert recs["test_bad"]["outcome"] == "failed" and "one is not two" in recs["test_bad"]["message"]
    assert recs["test_skip"]["outcome"] == "skipped" and recs["test_skip"]["when"] == "setup"
    broken = recs["test_broken.py"]
    assert broken["when"] == "collect" and "no_such_module_here" in broken["message"]


def test_profile_top_ops_sums_by_name_and_reads_a_real_trace(tmp_path):
    prof = load("profile_resnet50")
    top = prof.top_ops([("a", 3e6), ("b", 5e6), ("a", 4e6), ("c", 1e6)], top=2, steps=2)
    assert [(o["name"], o["count"], o["ms_per_step"]) for o in top["top"]] == [("a", 2, 3.5), ("b", 1, 2.5)]
    assert top["top"][0]["share"] == pytest.approx(7 / 13) and top["op_time_ms_per_step"] == pytest.approx(6.5)
    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((128, 128))
    f(x).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        f(x).block_until_ready()
    pbs = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns if n.endswith(".xplane.pb")]
    source, events, kernels = prof.op_events(pbs[0])
    assert events and all(d >= 0 for _, d in events)
    assert bool(kernels) == (jax.default_backend() == "gpu")
    assert not any(n.startswith(prof.SKIP_PREFIXES) for n, _ in events)
    assert source.startswith("device planes") == (jax.default_backend() != "cpu")


def test_gradnorm_bench_agrees_with_the_closed_form():
    res = load("bench_gradnorm").run(n=512, dim=16, classes=3, repeats=1)
    assert res["max_rel_err"] < 1e-4 and res["max_abs_err"] < 1e-4
    assert res["vmap_over_closed_form"] == pytest.approx(res["vmap_s"] / res["closed_form_s"])
