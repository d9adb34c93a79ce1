"""TRAK featurisation: dense JL projection vs the factorized (per-layer Kronecker) projection.

Throughput (examples/s, after a warm-up chunk that compiles) and peak memory (peak RSS minus RSS
after set-up, MiB) of `make_featurizer` on ResNet-18 (random init, `--size` px images) and a
small BERT (`--bert`: vocab 30,522, hidden 256, 4 layers, 4 heads, intermediate 1,024; sequences
of `--seq-len` tokens; `--bert base`: BERT-base's shape), each variant in its own subprocess,
same k; plus traker 0.3.2's TRAKer on torchvision's ResNet-18 of the same shape (CUDA when
torch sees a GPU, else CPU) when torch/traker import. Peak memory is host RSS (on a GPU it
does not include device memory).
`dense` is the library default for a model this size: the Gaussian projection regenerated block
by block inside the kernel (`P` would take n_params x k x 4 bytes).

Quality (`--quality`): mean per-target Spearman against exact (unprojected) TRAK scores on a
Flax MLP (3 seeds), and LDS on scikit-learn's bundled digits (`tools/lds_small.py`'s MLP,
models and retrained half-subsets) for exact, dense and factorized scores.

    python -m benchmarks.bench_trak_factorized                 # CPU: ResNet-18 32 px + small BERT, k=512
    python -m benchmarks.bench_trak_factorized --quality       # + Spearman / LDS
    python -m benchmarks.bench_trak_factorized --smoke --size 224 --bert base --batch 32 --batches 5   # GPU check
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

BERT_CONFIGS = {"small": dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                              intermediate_size=1024, max_position_embeddings=512),
                "base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=512)}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(name: str, a) -> tuple:
    import jax

    from gradtune_jax.models.registry import create_model
    from gradtune_jax.models.testing import numpy_variables

    rng = np.random.default_rng(0)
    if name == "resnet18":
        model = create_model("resnet18", 10)
        x = rng.normal(size=(a.batch, a.size, a.size, 3)).astype(np.float32)
    else:
        from gradtune_jax.models.bert import BertSettings
        cfg = BertSettings(**BERT_CONFIGS[a.bert])
        model = create_model("bert", 2, config=cfg)
        ids = rng.integers(0, cfg.vocab_size, (a.batch, a.seq_len)).astype(np.int32)
        x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    x1 = jax.tree.map(lambda v: v[:1], x)
    variables = numpy_variables(model, x1)
    y = (np.arange(a.batch) % (10 if name == "resnet18" else 2)).astype(np.int32)
    return model, variables, x, y


def worker(name: str, projector: str, a) -> dict:
    import jax

    from gradtune_jax.trak.scores import make_featurizer

    model, variables, x, y = _model(name, a)
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))

    def apply_fn(v, xb):
        return model.apply(v, xb, train=False)[0]

    base = rss_mib()
    t0 = time.perf_counter()
    fn = make_featurizer(apply_fn, variables, jax.random.key(0), wrt="params", proj_dim=a.proj_dim,
                         proj_type="factorized" if projector == "factorized" else "normal")
    fn(x, y)  # compile + first chunk
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = jax.devices()[0].platform == "cpu"
    n_batches = 1 if projector == "dense" and cpu and not a.smoke else a.batches
    for _ in range(n_batches):
        phi, _ = fn(x, y)
    dt = time.perf_counter() - t0
    assert phi.shape == (a.batch, a.proj_dim) and np.isfinite(phi).all()
    return {"model": name, "projector": projector, "n_params": n_params, "k": a.proj_dim, "batch": a.batch,
            "batches_timed": n_batches, "examples_per_s": n_batches * a.batch / dt, "warmup_s": warm,
            "peak_mib": peak_mib() - base, "device": str(jax.devices()[0].platform)}


def traker_worker(a) -> dict:
    """traker 0.3.2's TRAKer on torchvision's ResNet-18 (random init, eval mode), same k and
    batch; timed from after its constructor + first chunk (warm-up) over the timed chunks."""
    import tempfile

    import torch
    from trak import TRAKer

    from gradtune_jax.models.testing import import_torchvision

    tv = import_torchvision()
    model = tv.models.resnet18(num_classes=10).eval()
    n_params = sum(v.numel() for v in model.parameters())
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(a.batch, 3, a.size, a.size)).astype(np.float32))
    y = torch.arange(a.batch) % 10
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    n_batches = 1 if device == "cpu" and not a.smoke else a.batches
    with tempfile.TemporaryDirectory() as d:
        base = rss_mib()
        t0 = time.perf_counter()
        tk = TRAKer(model=model, task="image_classification", train_set_size=a.batch * (n_batches + 1), save_dir=d,
                    device=device, proj_dim=a.proj_dim, use_half_precision=False, logging_level=40)
        tk.load_checkpoint(model.state_dict(), model_id=0)
        tk.featurize(batch=(x, y), num_samples=a.batch)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n_batches):
            tk.featurize(batch=(x, y), num_samples=a.batch)
        dt = time.perf_counter() - t0
    return {"model": "resnet18", "projector": "traker 0.3.2 (dense)", "n_params": n_params, "k": a.proj_dim,
            "batch": a.batch, "batches_timed": n_batches, "examples_per_s": n_batches * a.batch / dt,
            "warmup_s": warm, "peak_mib": peak_mib() - base, "device": device, "torch": torch.__version__}


def run_sub(args: list[str], timeout: int) -> dict | str:
    try:
        p = subprocess.run([sys.executable, "-m", "benchmarks.bench_trak_factorized", *args], capture_output=True,
                           text=True, timeout=timeout, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return (p.stderr.strip().splitlines() or ["failed"])[-1][:200]
    return json.loads(lines[-1])


def quality(a) -> dict:
    """Spearman vs exact on a Flax MLP; LDS on the bundled digits for exact / dense / factorized."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from scipy.stats import spearmanr
    from sklearn.datasets import load_digits

    from gradtune_jax.trak import compute_scores, margin
    from gradtune_jax.trak.lds import half_subsets, lds
    from tools import lds_small

    def mean_spearman(s, ref):
        return float(np.mean([spearmanr(s[:, t], ref[:, t]).statistic for t in range(s.shape[1])]))

    class MLP(nn.Module):  # lds_small's tanh MLP as Flax layers: Dense_0 = (w1, b1), Dense_1 = (w2, b2)
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(lds_small.HIDDEN, name="Dense_0")(x))
            return nn.Dense(lds_small.N_CLASSES, name="Dense_1")(h)

    mlp = MLP()

    def flax_apply(v, x):
        return mlp.apply(v, x)

    def to_flax(p):
        return {"params": {"Dense_0": {"kernel": p["w1"], "bias": p["b1"]},
                           "Dense_1": {"kernel": p["w2"], "bias": p["b2"]}}}

    d = load_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(d.target))
    x = (d.data / 16.0).astype(np.float32)
    n_tr, n_t = (300, 30) if a.smoke else (lds_small.N_TRAIN, lds_small.N_TARGETS)
    tr, te = perm[:n_tr], perm[n_tr:n_tr + n_t]
    xtr, ytr, xte, yte = x[tr], d.target[tr], x[te], d.target[te]
    subsets = 10 if a.smoke else a.subsets
    masks = half_subsets(n_tr, subsets, 0)
    keys = jax.random.split(jax.random.key(10_000), subsets)
    retrained = jax.vmap(lambda w, k: lds_small.train(jnp.asarray(xtr), jnp.asarray(ytr), w, x.shape[1], k))(
        jnp.asarray(masks, jnp.float32), keys)
    margins = np.asarray(jax.vmap(lambda p: margin(lds_small.apply_fn(p, jnp.asarray(xte)), jnp.asarray(yte)))(
        retrained))
    full = to_flax(lds_small.train(jnp.asarray(xtr), jnp.asarray(ytr), jnp.ones(n_tr), x.shape[1], jax.random.key(0)))
    kw = dict(lambda_reg=1e-2, wrt="params", progress=False)
    exact = np.asarray(compute_scores(flax_apply, [full], (xtr, ytr), (xte, yte), proj_dim=None, **kw))
    out = {"n_train": n_tr, "n_targets": n_t, "subsets": subsets, "k": a.quality_k,
           "lds": {"exact": lds(exact, masks, margins)[0]}, "spearman_vs_exact": {}}
    for proj in ("dense", "factorized"):
        rhos, ldss = [], []
        for seed in range(3):
            s = np.asarray(compute_scores(flax_apply, [full], (xtr, ytr), (xte, yte), proj_dim=a.quality_k, seed=seed,
                                          proj_type="factorized" if proj == "factorized" else "normal", **kw))
            rhos.append(mean_spearman(s, exact))
            ldss.append(lds(s, masks, margins)[0])
        out["spearman_vs_exact"][proj] = (float(np.mean(rhos)), float(np.std(rhos)))
        out["lds"][proj] = (float(np.mean(ldss)), float(np.std(ldss)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="short run: sequences <= 32 tokens, 2 timed chunks for every variant (GPU check script)")
    p.add_argument("--size", type=int, default=32, help="ResNet-18 image size (default 32)")
    p.add_argument("--seq-len", type=int, default=128, help="BERT sequence length (default 128)")
    p.add_argument("--bert", choices=tuple(BERT_CONFIGS), default="small", help="BERT size (default small)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=3, help="timed chunks (dense on CPU: 1; it is slow)")
    p.add_argument("--proj-dim", type=int, default=512)
    p.add_argument("--models", default="resnet18,bert")
    p.add_argument("--no-traker", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--quality-k", type=int, default=256)
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--traker-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.smoke:
        a.seq_len, a.batches = min(a.seq_len, 32), min(a.batches, 2)
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a)))
        return 0
    if a.traker_worker:
        print(json.dumps(traker_worker(a)))
        return 0
    flags = ["--size", str(a.size), "--seq-len", str(a.seq_len), "--batch", str(a.batch), "--batches", str(a.batches),
             "--proj-dim", str(a.proj_dim), "--bert", a.bert] + (["--smoke"] if a.smoke else [])
    t0 = time.perf_counter()
    rows = []
    for name in [m for m in a.models.split(",") if m]:
        res = {}
        for proj in ("dense", "factorized"):
            r = run_sub(["--worker", name, proj, *flags], a.timeout)
            res[proj] = r
            rows.append(r if isinstance(r, dict) else {"model": name, "projector": proj, "error": r})
            print(json.dumps(rows[-1]), flush=True)
        if all(isinstance(r, dict) for r in res.values()):
            ratio = res["factorized"]["examples_per_s"] / res["dense"]["examples_per_s"]
            print(f"{name}: factorized / dense throughput = {ratio:.1f}x at k={a.proj_dim}", flush=True)
            rows.append({"model": name, "ratio_factorized_over_dense": ratio})
        if name == "resnet18" and not a.no_traker:
            r = run_sub(["--traker-worker", *flags], a.timeout)
            rows.append(r if isinstance(r, dict) else {"model": name, "projector": "traker", "error": r})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| model | projector | params | k | examples/s | peak MiB | warm-up s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "examples_per_s" in r:
            print(f"| {r['model']} | {r['projector']} | {r['n_params']:,} | {r['k']} | {r['examples_per_s']:.2f} | "
                  f"{r['peak_mib']:.0f} | {r['warmup_s']:.1f} |")
        elif "error" in r:
            print(f"| {r['model']} | {r['projector']} | - | - | not run: {r['error']} | | |")
    out = {"rows": rows}
    if a.quality:
        out["quality"] = quality(a)
        print(json.dumps(out["quality"]))
    out["seconds"] = time.perf_counter() - t0
    if a.json:
        from gradtune_jax.io import atomic_write_json
        atomic_write_json(a.json, out)
    print(f"({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
