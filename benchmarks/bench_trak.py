"""TRAK featurisation on CPU: throughput and peak memory, ours vs MadryLab's traker, same MLP.

Each variant runs in its own subprocess (clean peak RSS): `ours` (Gaussian projection
materialised once per checkpoint when small, the default), `ours-blocks` (Gaussian, regenerated
block by block inside the kernel, memory O(block x k)), `ours-rademacher-blocks` (the same with
Rademacher signs, 32 per random word), and `traker` (0.3.2, CPU, Gaussian BasicProjector, float32),
skipped with a note when torch/traker are not installed. Same weights (numpy), same inputs,
same k. Ours is timed after a warm-up call (XLA compilation) and includes generating the projection once;
traker is timed from its constructor (which generates its projection) through featurisation.
Memory = peak RSS minus RSS after set-up (imports, model, data), in MiB.

    python -m benchmarks.bench_trak [--n 1024] [--batch 128] [--proj-dim 512] [--hidden 256]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

D_IN, N_CLASSES = 784, 10


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_weights(hidden: int) -> tuple[dict, np.random.Generator, int]:
    rng = np.random.default_rng(0)
    dims = [D_IN, hidden, hidden, N_CLASSES]
    w = {}
    for i in range(3):
        w[f"w{i}"] = (rng.normal(size=(dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        w[f"b{i}"] = np.zeros(dims[i + 1], np.float32)
    n_params = sum(v.size for v in w.values())
    return w, rng, n_params


def data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(n, D_IN)).astype(np.float32), rng.integers(0, N_CLASSES, n).astype(np.int64)


def run_ours(args, cache: bool | None, proj_type: str = "normal") -> dict:
    import jax
    import jax.numpy as jnp

    from gradtune_jax.trak import featurize_dataset

    w, rng, n_params = make_weights(args.hidden)
    x, y = data(args.n + args.batch, rng)

    def apply_fn(p, x):
        h = jnp.tanh(x @ p["w0"] + p["b0"])
        h = jnp.tanh(h @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    params = jax.tree.map(jnp.asarray, w)
    kw = dict(proj_dim=args.proj_dim, proj_type=proj_type, batch_size=args.batch, cache_projection=cache,
              progress=False)
    base = rss_mib()
    featurize_dataset(apply_fn, params, (x[:args.batch], y[:args.batch]), jax.random.key(0), **kw)  # warm-up
    t = time.perf_counter()
    phi, _ = featurize_dataset(apply_fn, params, (x[args.batch:], y[args.batch:]), jax.random.key(0), **kw)
    secs = time.perf_counter() - t
    return {"examples_per_s": args.n / secs, "peak_mib": peak_mib() - base, "n_params": n_params,
            "shape": list(phi.shape)}


def run_traker(args) -> dict:
    import torch
    from trak import TRAKer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    w, rng, n_params = make_weights(args.hidden)
    x, y = data(args.n + args.batch, rng)
    layers = [torch.nn.Linear(D_IN, args.hidden), torch.nn.Tanh(), torch.nn.Linear(args.hidden, args.hidden),
              torch.nn.Tanh(), torch.nn.Linear(args.hidden, N_CLASSES)]
    model = torch.nn.Sequential(*layers).eval()
    state = {}
    for i, li in enumerate((0, 2, 4)):
        state[f"{li}.weight"] = torch.tensor(np.ascontiguousarray(w[f"w{i}"].T))
        state[f"{li}.bias"] = torch.tensor(w[f"b{i}"])
    model.load_state_dict(state)
    xt, yt = torch.tensor(x[args.batch:]), torch.tensor(y[args.batch:])
    with tempfile.TemporaryDirectory() as d:
        base = rss_mib()
        t = time.perf_counter()  # includes the projection generation (BasicProjector.__init__), as ours does
        tk = TRAKer(model=model, task="image_classification", train_set_size=args.n, save_dir=d,
                    device="cpu", proj_dim=args.proj_dim, use_half_precision=False, logging_level=40)
        tk.load_checkpoint(state, model_id=0)
        for s in range(0, args.n, args.batch):
            tk.featurize(batch=(xt[s:s + args.batch], yt[s:s + args.batch]), num_samples=len(yt[s:s + args.batch]))
        secs = time.perf_counter() - t
    return {"examples_per_s": args.n / secs, "peak_mib": peak_mib() - base, "n_params": n_params}


def child(args) -> None:
    res = {"ours": lambda: run_ours(args, None), "ours-blocks": lambda: run_ours(args, False),
           "ours-rademacher-blocks": lambda: run_ours(args, False, "rademacher"),
           "traker": lambda: run_traker(args)}[args.variant]()
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="examples featurised (after one warm-up batch)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    variants = ["ours", "ours-blocks", "ours-rademacher-blocks"]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("trak"):
        variants.append("traker")
    else:
        print("traker/torch not installed: measuring ours only (pip install torch==2.13.0 traker==0.3.2)")
    results = {}
    for v in variants:
        cmd = [sys.executable, "-m", "benchmarks.bench_trak", "--variant", v, "--n", str(args.n), "--batch",
               str(args.batch), "--proj-dim", str(args.proj_dim), "--hidden", str(args.hidden)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{v}: failed ({proc.stderr.strip().splitlines()[-1:] or proc.returncode})")
            continue
        results[v] = json.loads(line[0][7:])
        r = results[v]
        print(f"{v:<23} {r['examples_per_s']:9.1f} examples/s   peak +{r['peak_mib']:8.1f} MiB   "
              f"({r['n_params']} params, k={args.proj_dim})", flush=True)
    if "traker" in results:
        for v in ("ours", "ours-blocks", "ours-rademacher-blocks"):
            if v in results:
                print(f"{v} / traker: throughput x{results[v]['examples_per_s'] / results['traker']['examples_per_s']:.2f}"
                      f", peak memory x{results[v]['peak_mib'] / max(results['traker']['peak_mib'], 1e-9):.2f}")
    print(json.dumps({"config": vars(args), "results": results}))


if __name__ == "__main__":
    main()
