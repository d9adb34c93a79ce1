"""Profile the ResNet-50 train step with `jax.profiler`: top ops by time, and the step against the chip's peak.

    python -m benchmarks.profile_resnet50                                  # 224 px, bf16, batch 256, 20 steps
    python -m benchmarks.profile_resnet50 --arch resnet18 --image-size 32 --batch-size 4 --steps 3 \
        --matmul-size 512 --json prof.json                                 # CPU smoke size

The step is the one `bench_resnet50.py` times (same setup: `jax_setup`). After `--warmup` steps
(compilation), `--steps` steps are timed without the profiler, then the same number run inside
`jax.profiler.trace(--trace-dir)` with one `StepTraceAnnotation` per step. The trace's
`*.xplane.pb` is read with `jax.profiler.ProfileData` (jaxlib's own reader; no TensorFlow or
TensorBoard needed): on a GPU/TPU the device planes' "XLA Ops" line (each HLO op's execution on
the device) when the trace has one, else every device "Stream" line's kernels summed by their
`hlo_op` stat (and separately by kernel name: `kernels`); on CPU the XLA thread-pool lines of
`/host:CPU`. Ops are summed by name over all profiled steps; the top `--top` are reported with
their share of the summed op time.

The step's FLOPs come from XLA's cost analysis of the lowered step (`jax.stages.Lowered
.cost_analysis()`, before optimisation: an estimate); achieved FLOP/s = FLOPs / step time. The
baseline, measured in the same run on the same device, is a square `--matmul-size` matrix
product in the step's dtype (bf16: bf16 x bf16); the ratio says how far the step is from the
chip's practical peak. If the trace cannot be parsed, the reason is recorded and the rest still
reported (`trace_dir_bytes` always is).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnet50 import ARCHS, DTYPES, jax_setup  # noqa: E402  (sibling script, not a package)

from gradtune_jax.io import atomic_write_json  # noqa: E402

SKIP_PREFIXES = ("ThreadpoolListener::", "end: ", "ThunkExecutor::")  # CPU: wrappers around the ops


def dir_bytes(path: str) -> int:
    """Total size of the files under `path`."""
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "**"), recursive=True) if os.path.isfile(f))


def _hlo_op(event) -> str | None:
    """The `hlo_op` stat of a GPU kernel event (the XLA op that launched it), if recorded."""
    for name, value in event.stats:
        if name == "hlo_op" and value:
            return str(value)
    return None


def op_events(xplane_path: str) -> tuple[str, list[tuple[str, float]], list[tuple[str, float]]]:
    """(where the events came from, [(XLA op, duration ns)], [(GPU kernel, duration ns)]) of one `.xplane.pb`.

    Device planes: their "XLA Ops" line when the trace has one; else every "Stream" line's
    kernels, attributed to their `hlo_op` stat (kernel name when absent). CPU: the XLA
    thread-pool lines of `/host:CPU`, without the executor's wrapper events; no kernels.
    """
    data = jax.profiler.ProfileData.from_file(xplane_path)
    planes = list(data.planes)
    device = [p for p in planes if p.name.startswith("/device:")]
    ops: list[tuple[str, float]] = []
    kernels: list[tuple[str, float]] = []
    if device:
        used_ops_line = False
        for plane in device:
            lines = list(plane.lines)
            streams = [ln for ln in lines if ln.name.startswith("Stream")]
            kernel_events = [e for ln in streams for e in ln.events]
            kernels += [(e.name, e.duration_ns) for e in kernel_events]
            op_lines = [ln for ln in lines if ln.name == "XLA Ops"]
            if op_lines:
                used_ops_line = True
                ops += [(e.name, e.duration_ns) for ln in op_lines for e in ln.events]
            else:
                ops += [(_hlo_op(e) or e.name, e.duration_ns) for e in kernel_events]
        source = "device planes " + ", ".join(sorted({p.name for p in device}))
        return source + (": XLA Ops lines" if used_ops_line else ": Stream kernels by hlo_op"), ops, kernels
    for plane in planes:
        if plane.name == "/host:CPU":
            for ln in plane.lines:
                if ln.name.startswith("tf_XLA"):
                    ops += [(e.name, e.duration_ns) for e in ln.events if not e.name.startswith(SKIP_PREFIXES)]
    return "/host:CPU XLA thread-pool lines (no device plane)", ops, kernels


def top_ops(events: list[tuple[str, float]], top: int, steps: int) -> dict:
    """The `top` op names by summed duration, with count, ms per step and share of all op time."""
    total = collections.Counter()
    count = collections.Counter()
    for name, ns in events:
        total[name] += ns
        count[name] += 1
    all_ns = sum(total.values())
    return {"op_time_ms_per_step": all_ns / 1e6 / steps, "distinct_ops": len(total),
            "top": [{"name": name, "count": count[name], "ms_per_step": ns / 1e6 / steps,
                     "share": ns / all_ns if all_ns else None} for name, ns in total.most_common(top)]}


def matmul_tflops(size: int, dtype: str, repeats: int = 10) -> float:
    """TFLOP/s of a `size`^3 matrix product in `dtype` on the default device (median of `repeats`)."""
    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (size, size), dt)
    b = jax.random.normal(jax.random.key(1), (size, size), dt)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times) / 1e12


def run(args: argparse.Namespace) -> dict:
    """Timing, cost analysis, matmul baseline and the trace's top ops; see the module docstring."""
    par, state, placed = jax_setup(args.batch_size, args.image_size, args.dtype, args.parallel, args.arch)
    res: dict = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
                 "dtype": args.dtype, "parallel": args.parallel, "steps": args.steps, "jax": jax.__version__,
                 "device_kind": jax.devices()[0].device_kind, "devices": len(jax.devices())}
    try:
        cost = par.step.lower(state, placed).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        res["step_flops"] = float(cost["flops"]) if cost and "flops" in cost else None
    except Exception as e:  # noqa: BLE001 - reporting only
        res["step_flops"], res["cost_analysis_error"] = None, f"{type(e).__name__}: {e}"
    t = time.perf_counter()
    metrics = None
    for _ in range(args.warmup):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    res["warmup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    step_s = (time.perf_counter() - t) / args.steps
    res.update(step_ms=1e3 * step_s, img_per_s=args.batch_size / step_s)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="resnet50_trace_")
    t = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        for i in range(args.steps):
            with jax.profiler.StepTraceAnnotation("train", step_num=i):
                state, metrics = par.step(state, placed)
        jax.block_until_ready((state, metrics))
    res["profiled_step_ms"] = 1e3 * (time.perf_counter() - t) / args.steps
    res["trace_dir"], res["trace_dir_bytes"] = trace_dir, dir_bytes(trace_dir)
    pbs = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    res["trace_files"] = [os.path.relpath(f, trace_dir) for f in glob.glob(os.path.join(trace_dir, "**", "*"),
                                                                           recursive=True) if os.path.isfile(f)]
    try:
        if not pbs:
            raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
        source, ops, kernels = op_events(pbs[-1])
        res["ops_source"] = source
        res.update(top_ops(ops, args.top, args.steps))
        if kernels:
            res["kernels"] = top_ops(kernels, args.top, args.steps)
        res["op_time_over_step_time"] = res["op_time_ms_per_step"] / res["profiled_step_ms"]
    except Exception as e:  # noqa: BLE001 - the rest of the result still counts
        res["trace_parse_error"] = f"{type(e).__name__}: {e}"
    res["matmul_size"] = args.matmul_size
    res["matmul_tflops"] = matmul_tflops(args.matmul_size, args.dtype)
    if res.get("step_flops"):
        res["step_tflops"] = res["step_flops"] / step_s / 1e12
        res["step_over_matmul"] = res["step_tflops"] / res["matmul_tflops"]
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=ARCHS, default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256, help="global batch size")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--parallel", default="jit", choices=("jit", "pmap", "none"))
    p.add_argument("--steps", type=int, default=20, help="steps timed, then the same number profiled")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=5, help="ops reported")
    p.add_argument("--matmul-size", type=int, default=8192, help="square matmul baseline (same dtype)")
    p.add_argument("--trace-dir", help="where the trace goes (default: a new temp folder)")
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    res = run(args)
    print(f"{res['arch']} {res['image_size']}px {res['dtype']} batch {res['batch_size']} ({res['parallel']}) on "
          f"{res['device_kind']}: {res['step_ms']:.2f} ms/step, {res['img_per_s']:.1f} img/s; "
          f"profiled {res['profiled_step_ms']:.2f} ms/step; trace {res['trace_dir_bytes'] / 2**20:.1f} MiB")
    if "top" in res:
        print(f"top {args.top} ops ({res['ops_source']}; op time {res['op_time_ms_per_step']:.2f} ms/step):")
        for op in res["top"]:
            print(f"  {op['ms_per_step']:9.3f} ms/step {100 * op['share']:5.1f}%  x{op['count']:<5} {op['name'][:90]}")
        if "kernels" in res:
            print(f"top {args.top} GPU kernels (kernel time {res['kernels']['op_time_ms_per_step']:.2f} ms/step):")
            for op in res["kernels"]["top"]:
                print(f"  {op['ms_per_step']:9.3f} ms/step {100 * op['share']:5.1f}%  x{op['count']:<5} {op['name'][:90]}")
    else:
        print(f"trace not parsed: {res.get('trace_parse_error')}")
    if res.get("step_tflops") is not None:
        print(f"step {res['step_flops'] / 1e9:.1f} GFLOP -> {res['step_tflops']:.2f} TFLOP/s; {args.dtype} matmul "
              f"{args.matmul_size}^3: {res['matmul_tflops']:.2f} TFLOP/s; ratio {res['step_over_matmul']:.3f}")
    if args.json:
        atomic_write_json(args.json, res)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
