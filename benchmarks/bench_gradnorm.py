"""`last_layer_grad_norms` (vmap of per-example grads) vs its closed form: error and speed.

    python -m benchmarks.bench_gradnorm                                  # 500k x 2048, 2 classes
    python -m benchmarks.bench_gradnorm --n 4096 --dim 64 --json out.json  # CPU smoke size

Random features `feats_ND` (N(0, 1), float32), labels and a head `{"kernel": (D, C), "bias": (C,)}`
from one seed, drawn with `jax.random` on the default device. Both functions are jitted and warmed up once
(compilation excluded), then timed over `--repeats` calls (median). Reports the max absolute and
relative error of the vmap path against the closed form and the time ratio vmap / closed form
(the closed form is the baseline, measured in the same run), plus the device's peak memory
where the backend reports it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.io import atomic_write_json
from gradtune_jax.kernels.gradnorm import last_layer_grad_norms, last_layer_grad_norms_closed_form


def peak_bytes(device: jax.Device) -> int | None:
    """`peak_bytes_in_use` of `device.memory_stats()`, None where the backend has none (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return None if not stats else stats.get("peak_bytes_in_use")


def time_calls(fn, *args, repeats: int) -> tuple[float, float, jax.Array]:
    """(compile+first-call seconds, median seconds of `repeats` further calls, last output)."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), out


def run(n: int, dim: int, classes: int, repeats: int, seed: int = 0) -> dict:
    """Errors and timings of both paths on `n x dim` features; see the module docstring."""
    k_x, k_y, k_w, k_b = jax.random.split(jax.random.key(seed), 4)  # drawn on the device: 4 GB at full size
    feats_ND = jax.random.normal(k_x, (n, dim), jnp.float32)
    labels_N = jax.random.randint(k_y, (n,), 0, classes, jnp.int32)
    head = {"kernel": jax.random.normal(k_w, (dim, classes), jnp.float32) / np.sqrt(dim),
            "bias": 0.1 * jax.random.normal(k_b, (classes,), jnp.float32)}
    closed = jax.jit(last_layer_grad_norms_closed_form)
    c_first, c_sec, ref_N = time_calls(closed, head, feats_ND, labels_N, repeats=repeats)
    v_first, v_sec, got_N = time_calls(last_layer_grad_norms, head, feats_ND, labels_N, repeats=repeats)
    ref, got = np.asarray(ref_N, np.float64), np.asarray(got_N, np.float64)
    abs_err = np.abs(got - ref)
    device = feats_ND.devices().pop() if hasattr(feats_ND, "devices") else jax.devices()[0]
    return {
        "n": n, "dim": dim, "classes": classes, "repeats": repeats, "device": str(device),
        "device_kind": device.device_kind, "jax": jax.__version__,
        "max_abs_err": float(abs_err.max()), "max_rel_err": float((abs_err / np.maximum(ref, 1e-30)).max()),
        "vmap_s": v_sec, "closed_form_s": c_sec, "vmap_over_closed_form": v_sec / c_sec,
        "vmap_first_call_s": v_first, "closed_form_first_call_s": c_first,
        "rows_per_s_vmap": n / v_sec, "rows_per_s_closed_form": n / c_sec,
        "peak_bytes_in_use": peak_bytes(device),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500_000, help="rows (examples)")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension D (ResNet-50: 2048)")
    p.add_argument("--classes", type=int, default=2, help="head outputs C (Waterbirds/CelebA: 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up call (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    res = run(args.n, args.dim, args.classes, args.repeats, args.seed)
    print(f"last_layer_grad_norms on {res['n']} x {res['dim']} (C={res['classes']}) on {res['device_kind']}: "
          f"vmap {res['vmap_s'] * 1e3:.2f} ms, closed form {res['closed_form_s'] * 1e3:.2f} ms "
          f"(ratio {res['vmap_over_closed_form']:.2f}); max abs err {res['max_abs_err']:.3g}, "
          f"max rel err {res['max_rel_err']:.3g}; peak bytes {res['peak_bytes_in_use']}")
    if args.json:
        atomic_write_json(args.json, res)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
