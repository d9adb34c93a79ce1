"""Assemble `gpu_check.sh`'s per-step outputs into `gpu_check.json` and a printed summary.

    python benchmarks/gpu_check_report.py WORK_DIR OUT_DIR

Reads what the steps left in WORK_DIR (`env.json`, `steps.jsonl`, `gradnorm.json`,
`resnet50_jit.json`, `resnet50_pmap.json`, `profile.json`, `trak.json`, `pytest.jsonl`,
`pytest_cpu.jsonl`, `table1/results.json`) and the committed CPU reference
(`benchmarks/results/cpu-reference.json`), and writes OUT_DIR/gpu_check.json (schema:
benchmarks/results/README.md) and OUT_DIR/summary.txt, both atomically; prints the summary.
Missing inputs are normal (a step skipped, failed or cut short): their figure says so. Imports
only the standard library, so it reports even when the package or JAX does not import.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "results", "cpu-reference.json")
SCHEMA = 1
# Issue 15's numbering of the figures, and the steps (gpu_check.sh keys) that produce them.
FIGURES = {"1_pytest": ("pytest", "pytest_cpu_rerun"), "2_table1": ("table1",),
           "3_resnet50": ("resnet50", "resnet50_pmap"), "4_gradnorm": ("gradnorm",), "5_trak": ("trak",),
           "6_profile": ("profile",)}


def load_json(path: str) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_jsonl(path: str) -> list[dict]:
    """The JSON lines of `path` (unparsable lines, e.g. one cut by a kill, are dropped)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def atomic_write(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and a rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp_")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def slug(text: str) -> str:
    """`NVIDIA H200` -> `nvidia-h200` (file-name safe)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def pytest_figure(work: str) -> dict | None:
    """Counts by outcome, the failures with their message, and whether each fails on CPU too."""
    recs = load_jsonl(os.path.join(work, "pytest.jsonl"))
    if not recs:
        return None
    outcome: dict[str, str] = {}
    messages: dict[str, str] = {}
    collect_errors = []
    for r in recs:
        if r["when"] == "session":
            continue
        if r["when"] == "collect":
            collect_errors.append({"nodeid": r["nodeid"], "message": r.get("message", "")})
            continue
        if r["outcome"] == "failed":
            outcome[r["nodeid"]] = "error" if r["when"] != "call" else "failed"
            messages[r["nodeid"]] = r.get("message", "")
        elif r["when"] == "call" or r["nodeid"] not in outcome:
            outcome.setdefault(r["nodeid"], r["outcome"])
    counts = {k: sum(v == k for v in outcome.values()) for k in ("passed", "failed", "error", "skipped")}
    cpu = {r["nodeid"]: r["outcome"] for r in load_jsonl(os.path.join(work, "pytest_cpu.jsonl"))
           if r["when"] not in ("session", "collect") and (r["when"] == "call" or r["outcome"] != "passed")}
    failures = [{"nodeid": n, "kind": outcome[n], "message": messages.get(n, ""),
                 "on_cpu_same_machine": cpu.get(n, "not rerun")}
                for n in outcome if outcome[n] in ("failed", "error")]
    durations = sorted(((r.get("duration") or 0.0, r["nodeid"]) for r in recs if r["when"] == "call"), reverse=True)
    return {**counts, "collection_errors": collect_errors, "tests_reported": len(outcome), "failures": failures,
            "slowest": [{"nodeid": n, "seconds": d} for d, n in durations[:5]],
            "gpu_only_failures": sum(f["on_cpu_same_machine"] == "passed" for f in failures)}


def table1_figure(work: str, smoke: bool) -> dict | None:
    """Wall time and numbers of `experiments.table1`, against the committed CPU reference."""
    res = load_json(os.path.join(work, "table1", "results.json"))
    if res is None:
        return None
    ref = (load_json(REFERENCE) or {}).get("table1_digits")
    out: dict = {"dataset": res.get("dataset"), "seconds": res.get("seconds"), "seeds": res.get("config", {}).get("seeds"),
                 "devices": (res.get("versions") or {}).get("devices"), "rows": []}
    comparable = ref is not None and not smoke and res.get("dataset") == ref.get("dataset")
    out["cpu_reference"] = ({k: ref[k] for k in ("source", "command", "seconds")} if ref else None)
    if not comparable:
        out["cpu_comparison"] = "not comparable: " + ("--smoke runs --quick" if smoke else "no matching reference")
    ref_rows = {r["method"]: r for r in (ref or {}).get("summary", [])}
    for s in res.get("summary", []):
        row = {k: s.get(k) for k in ("method", "avg_mean", "avg_std", "wavg_mean", "wavg_std", "wga_mean", "wga_std")}
        c = ref_rows.get(s["method"]) if comparable else None
        if c:
            for k in ("avg", "wavg", "wga"):
                if row.get(f"{k}_mean") is not None and c.get(f"{k}_mean") is not None:
                    d = row[f"{k}_mean"] - c[f"{k}_mean"]
                    noise = 2 * math.hypot(row.get(f"{k}_std") or 0.0, c.get(f"{k}_std") or 0.0)
                    row.update({f"cpu_{k}_mean": c[f"{k}_mean"], f"delta_{k}": d, f"{k}_within_2sd": abs(d) <= noise})
        out["rows"].append(row)
    if comparable and res.get("seconds") and ref.get("seconds"):
        out["cpu_seconds_over_device_seconds"] = ref["seconds"] / res["seconds"]
    return out


def resnet_figure(work: str) -> dict | None:
    """One row per (dtype, batch, mode): JAX img/s, PyTorch img/s from the same run, and the ratio."""
    jit = load_json(os.path.join(work, "resnet50_jit.json"))
    pmap = load_json(os.path.join(work, "resnet50_pmap.json"))
    if jit is None and pmap is None:
        return None
    torch_by = {(r["dtype"], r["batch_size"]): r for r in (jit or {}).get("rows", []) if "torch" in r}
    rows = []
    for src in (jit, pmap):
        for r in (src or {}).get("rows", []):
            t = torch_by.get((r["dtype"], r["batch_size"]))
            row = {k: r.get(k) for k in ("arch", "dtype", "batch_size", "image_size", "parallel", "jax", "jax_step_ms",
                                         "jax_warmup_s")}
            if t is not None:
                row.update(torch=t["torch"], torch_step_ms=t["torch_step_ms"], ratio=r["jax"] / t["torch"])
            rows.append(row)
    return {"meta": (jit or pmap)["meta"], "torch": (jit or {}).get("torch", (pmap or {}).get("torch")),
            "rows": rows}


def profile_figure(work: str) -> dict | None:
    res = load_json(os.path.join(work, "profile.json"))
    if res is None:
        return None
    res.pop("trace_dir", None)  # a temp folder on the device machine, gone with it
    return res


def trak_figure(work: str) -> dict | None:
    """The TRAK benchmark's JSON; for bench_trak_factorized's rows, plus each projector against
    traker (throughput and peak-memory ratios) when traker ran in the same run."""
    res = load_json(os.path.join(work, "trak.json"))
    if not res or "rows" not in res:
        return res
    ref = next((r for r in res["rows"] if str(r.get("projector", "")).startswith("traker") and "examples_per_s" in r),
               None)
    if ref:
        res["vs_traker"] = {r["projector"]: {"throughput": r["examples_per_s"] / ref["examples_per_s"],
                                             "peak_mib": r["peak_mib"] / ref["peak_mib"] if ref.get("peak_mib") else None}
                            for r in res["rows"] if "examples_per_s" in r and r is not ref}
    return res


def headline(figs: dict) -> dict:
    """One line of ratios per figure (what the docs table quotes); absent figures are left out."""
    out: dict = {}
    p = figs["1_pytest"]
    if "missing" not in p:
        out["1_pytest"] = {"passed": p["passed"], "failed": p["failed"] + p["error"],
                           "collection_errors": len(p["collection_errors"]), "gpu_only_failures": p["gpu_only_failures"]}
    t = figs["2_table1"]
    if "missing" not in t:
        deltas = [abs(r["delta_wga"]) for r in t["rows"] if "delta_wga" in r]
        out["2_table1"] = {"seconds": t["seconds"], "cpu_seconds_over_device_seconds": t.get("cpu_seconds_over_device_seconds"),
                           "max_abs_delta_wga": max(deltas) if deltas else None}
    r = figs["3_resnet50"]
    if "missing" not in r:
        out["3_resnet50"] = {f"{x['dtype']}-{x['batch_size']}-{x['parallel']}": {"jax_img_s": x["jax"],
                                                                                 "jax_over_torch": x.get("ratio")}
                             for x in r["rows"]}
    g = figs["4_gradnorm"]
    if "missing" not in g:
        out["4_gradnorm"] = {k: g.get(k) for k in ("vmap_over_closed_form", "max_rel_err", "max_abs_err")}
    k = figs["5_trak"]
    if "missing" not in k and "rows" in k:
        out["5_trak"] = {"factorized_over_dense": next((x["ratio_factorized_over_dense"] for x in k["rows"]
                                                        if "ratio_factorized_over_dense" in x), None),
                         "vs_traker": k.get("vs_traker")}
    q = figs["6_profile"]
    if "missing" not in q:
        out["6_profile"] = {"step_over_matmul": q.get("step_over_matmul"), "img_per_s": q.get("img_per_s"),
                            "top_op": (q.get("top") or [{}])[0].get("name"),
                            "top_op_share": (q.get("top") or [{}])[0].get("share")}
    return out


def device_name(env: dict) -> str:
    """The accelerator's name: nvidia-smi's first field, else JAX's device kind."""
    smi = env.get("nvidia_smi") or ""
    if smi and "unavailable" not in smi and "failed" not in smi.lower() and "," in smi:
        return smi.splitlines()[0].split(",")[0].strip()
    return env.get("device_kind") or "unknown"


def build(work: str) -> dict:
    """The whole report (see benchmarks/results/README.md)."""
    env = load_json(os.path.join(work, "env.json")) or {}
    steps = {r["key"]: r for r in load_jsonl(os.path.join(work, "steps.jsonl"))}
    smoke = os.environ.get("SMOKE") == "1"
    name = device_name(env)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    figs = {"1_pytest": pytest_figure(work), "2_table1": table1_figure(work, smoke), "3_resnet50": resnet_figure(work),
            "4_gradnorm": load_json(os.path.join(work, "gradnorm.json")), "5_trak": trak_figure(work),
            "6_profile": profile_figure(work)}
    for key, fig in figs.items():
        if fig is None:
            figs[key] = {"missing": "; ".join(f"{s}: {steps[s]['status']} {steps[s].get('reason', '')}".strip()
                                              for s in FIGURES[key] if s in steps) or "not run (not selected)"}
    return {"schema": SCHEMA, "smoke": smoke, "started_utc": os.environ.get("STARTED"),
            "written_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "budget_s": int(os.environ.get("BUDGET", "0") or 0), "elapsed_s": int(os.environ.get("ELAPSED", "0") or 0),
            "only": os.environ.get("ONLY"), "device": {"name": name, "slug": slug(name),
                                                       "nvidia_smi": env.get("nvidia_smi"),
                                                       "jax_backend": env.get("backend"),
                                                       "jax_devices": env.get("jax_devices"),
                                                       "bytes_limit": env.get("device_bytes_limit")},
            "results_name": f"{'smoke-' if smoke else ''}{slug(name)}-{date}.json",
            "python": env.get("python"), "versions": env.get("packages"), "git_commit": os.environ.get("GIT_COMMIT") or env.get("git_commit"),
            "env_errors": {k: env[k] for k in ("jax_error", "gradtune_jax_error") if k in env},
            "steps": steps, "headline": headline(figs), "figures": figs}


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def summary(rep: dict) -> str:
    """The human-readable lines printed at the end of the run (and saved as summary.txt)."""
    d, f = rep["device"], rep["figures"]
    lines = [f"GPU check{' (SMOKE: tiny sizes, not results)' if rep['smoke'] else ''}: {d['name']} "
             f"(jax backend {d['jax_backend']}, {len(d['jax_devices'] or [])} device(s)); "
             f"jax {(rep['versions'] or {}).get('jax')}, torch {(rep['versions'] or {}).get('torch')}; "
             f"{rep['elapsed_s']}s of {rep['budget_s']}s budget; save as benchmarks/results/{rep['results_name']}"]
    for key, err in (rep.get("env_errors") or {}).items():
        lines.append(f"ENV {key}: {err[:300]}")
    lines.append("steps: " + ", ".join(f"{k} {s['status']} {s.get('seconds', 0)}s" for k, s in rep["steps"].items()))
    p = f["1_pytest"]
    if "missing" in p:
        lines.append(f"1 pytest: {p['missing']}")
    else:
        lines.append(f"1 pytest: {p['passed']} passed, {p['failed']} failed, {p['error']} errors, {p['skipped']} skipped, "
                     f"{len(p['collection_errors'])} collection errors; GPU-only failures (pass on CPU, same machine): "
                     f"{p['gpu_only_failures']}")
        for x in (p["collection_errors"] + p["failures"])[:12]:
            lines.append(f"    {x['nodeid']} [{x.get('on_cpu_same_machine', 'collect')}]: {x['message'][:150]}")
    t = f["2_table1"]
    if "missing" in t:
        lines.append(f"2 table1: {t['missing']}")
    else:
        lines.append(f"2 table1 ({t['dataset']}, seeds {t['seeds']}): {fmt(t['seconds'], '.0f')} s"
                     + (f" (CPU reference {t['cpu_reference']['seconds']} s, x{fmt(t.get('cpu_seconds_over_device_seconds'))})"
                        if t.get("cpu_seconds_over_device_seconds") else f"; {t.get('cpu_comparison', '')}"))
        for r in t["rows"]:
            cmp = (f" | CPU avg {r['cpu_avg_mean']:.1f} wga {r['cpu_wga_mean']:.1f} (delta {r['delta_avg']:+.1f} / "
                   f"{r['delta_wga']:+.1f}, within 2 sd: {r['avg_within_2sd']}/{r['wga_within_2sd']})"
                   if "cpu_wga_mean" in r and "cpu_avg_mean" in r else "")
            lines.append(f"    {r['method']:<16} avg {fmt(r['avg_mean'], '.1f')} ± {fmt(r['avg_std'], '.1f')}  "
                         f"wga {fmt(r['wga_mean'], '.1f')} ± {fmt(r['wga_std'], '.1f')}{cmp}")
    r = f["3_resnet50"]
    if "missing" in r:
        lines.append(f"3 resnet50: {r['missing']}")
    else:
        tr = r.get("torch") or {}
        lines.append(f"3 {r['meta'].get('arch', 'resnet50')} train step, {r['meta']['image_size']} px, img/s "
                     f"(torch: {'used' if tr.get('used') else 'skipped: ' + str(tr.get('reason'))}):")
        for row in r["rows"]:
            lines.append(f"    {row['dtype']:>4} batch {row['batch_size']:>4} {row['parallel']:>4}: jax {fmt(row['jax'], '.1f')}"
                         f"  torch {fmt(row.get('torch'), '.1f')}  jax/torch {fmt(row.get('ratio'))}")
    g = f["4_gradnorm"]
    lines.append(f"4 gradnorm: {g['missing']}" if "missing" in g else
                 f"4 gradnorm {g['n']} x {g['dim']} (C={g['classes']}): vmap {g['vmap_s'] * 1e3:.2f} ms, closed form "
                 f"{g['closed_form_s'] * 1e3:.2f} ms, ratio {g['vmap_over_closed_form']:.2f}; max abs err "
                 f"{g['max_abs_err']:.3g}, max rel err {g['max_rel_err']:.3g}; peak bytes {g['peak_bytes_in_use']}")
    k = f["5_trak"]
    if "missing" in k:
        lines.append(f"5 trak: {k['missing']}")
    elif "rows" in k:  # benchmarks/bench_trak_factorized.py
        lines.append("5 trak featurisation (bench_trak_factorized):")
        for v, x2 in (k.get("vs_traker") or {}).items():
            lines.append(f"    {v} / traker: throughput x{x2['throughput']:.2f}, peak memory x{fmt(x2['peak_mib'])}")
        for x in k["rows"]:
            if "examples_per_s" in x:
                lines.append(f"    {x['model']} {x['projector']:<22} k={x.get('k')} batch {x.get('batch')}: "
                             f"{x['examples_per_s']:.1f} examples/s, peak {fmt(x.get('peak_mib'), '.0f')} MiB "
                             f"({x.get('device')}), warm-up {fmt(x.get('warmup_s'), '.1f')} s")
            elif "ratio_factorized_over_dense" in x:
                lines.append(f"    {x['model']} factorized / dense throughput: x{x['ratio_factorized_over_dense']:.2f}")
            else:
                lines.append(f"    {x.get('model')} {x.get('projector')}: {x.get('error')}")
    else:  # benchmarks/bench_trak.py (MLP)
        lines.append(f"5 trak MLP ({json.dumps(k.get('config'))[:120]}):")
        for v, x in (k.get("results") or {}).items():
            lines.append(f"    {v:<24} " + ", ".join(f"{a} {fmt(b, '.4g') if isinstance(b, (int, float)) else b}"
                                                     for a, b in x.items()))
    q = f["6_profile"]
    if "missing" in q:
        lines.append(f"6 profile: {q['missing']}")
    else:
        lines.append(f"6 profile {q['arch']} {q['image_size']}px {q['dtype']} batch {q['batch_size']}: "
                     f"{q['step_ms']:.2f} ms/step ({q['img_per_s']:.1f} img/s), {fmt(q.get('step_tflops'), '.3g')} TFLOP/s vs "
                     f"{q['matmul_size']}^3 matmul {q['matmul_tflops']:.3g} TFLOP/s (x{fmt(q.get('step_over_matmul'), '.3f')}); "
                     f"trace {q['trace_dir_bytes'] / 2**20:.1f} MiB; {q.get('ops_source', q.get('trace_parse_error'))}")
        for op in q.get("top", []):
            lines.append(f"    {op['ms_per_step']:9.3f} ms/step {100 * (op['share'] or 0):5.1f}%  {op['name'][:100]}")
        for op in (q.get("kernels") or {}).get("top", []):
            lines.append(f"    kernel {op['ms_per_step']:9.3f} ms/step {100 * (op['share'] or 0):5.1f}%  {op['name'][:90]}")
    redo = [k for k, s in rep["steps"].items() if s["status"] in ("skipped", "timeout")]
    if redo:
        nums = sorted({n[0] for n, keys in FIGURES.items() if set(keys) & set(redo)})
        lines.append(f"not finished: {', '.join(redo)}; rerun with: bash benchmarks/gpu_check.sh --only {','.join(nums)}"
                     + (" --smoke" if rep["smoke"] else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gpu_check_report.py WORK_DIR OUT_DIR", file=sys.stderr)
        return 2
    work, out = argv
    rep = build(work)
    text = summary(rep)
    atomic_write(os.path.join(out, "gpu_check.json"), json.dumps(rep, indent=1, default=str) + "\n")
    atomic_write(os.path.join(out, "summary.txt"), text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
