"""ResNet-50 training throughput (images/s): gradtune-jax vs torchvision/PyTorch on the same machine.

    python benchmarks/bench_resnet50.py                       # CPU-friendly: 64 px, batches 8 16
    python benchmarks/bench_resnet50.py --image-size 224 --batch-sizes 64 128 256 --steps 20

One SGD-momentum training step (forward, backward, update; BatchNorm in train mode; 1000
classes) is timed after `--warmup` untimed steps (which include compilation), for each batch
size and precision: fp32, and bf16 (JAX: bf16 compute with fp32 params and loss; PyTorch:
`torch.autocast` bf16). JAX runs over all local devices in `--parallel` mode (global batch =
batch size); PyTorch runs on one device (CUDA if available, else CPU). Ratios are JAX / PyTorch
from the same run. `--no-torch` skips PyTorch (it is skipped anyway when not installed).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtune_jax.models import create_model
from gradtune_jax.models.testing import import_torchvision
from gradtune_jax.train.parallel import MODES, data_parallel
from gradtune_jax.train.state import create_state

DTYPES = ("fp32", "bf16")


def jax_throughput(batch_size: int, image_size: int, dtype: str, steps: int, warmup: int, parallel: str) -> float:
    """Images/s of the library's train step on ResNet-50."""
    model = create_model("resnet50", 1000, dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32)
    batch = {"x": x, "y": rng.integers(0, 1000, batch_size).astype(np.int32),
             "g": np.zeros(batch_size, np.int32), "w": np.ones(batch_size, np.float32)}
    variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))
    par = data_parallel(parallel)
    state = par.place(create_state(model, variables, optax.sgd(0.01, momentum=0.9)))
    placed = par.put(batch)
    for _ in range(warmup):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    return batch_size * steps / (time.perf_counter() - start)


def torch_throughput(batch_size: int, image_size: int, dtype: str, steps: int, warmup: int) -> float:
    """Images/s of a torchvision ResNet-50 training step (PyTorch eager)."""
    import torch

    torchvision = import_torchvision()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    autocast = (torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch_size * steps / (time.perf_counter() - start)


def torch_available() -> bool:
    try:
        import_torchvision()
    except (ImportError, RuntimeError):
        return False
    return True


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16], help="global batch sizes")
    p.add_argument("--image-size", type=int, default=64, help="square input size in pixels (224: ImageNet)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--parallel", choices=MODES, default="jit", help="JAX data-parallel mode")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    use_torch = not args.no_torch and torch_available()
    print(f"JAX {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
          f"image {args.image_size}px; {args.steps} timed steps after {args.warmup} warm-up; parallel={args.parallel}")
    if use_torch:
        import torch

        print(f"PyTorch {torch.__version__} on {'cuda' if torch.cuda.is_available() else 'cpu'} "
              f"({torch.get_num_threads()} threads)")
    print(f"{'dtype':>5} {'batch':>5} {'jax img/s':>10} {'torch img/s':>12} {'jax/torch':>9}")
    rows = []
    for dtype in args.dtypes:
        for bs in args.batch_sizes:
            row = {"dtype": dtype, "batch_size": bs, "image_size": args.image_size,
                   "jax": jax_throughput(bs, args.image_size, dtype, args.steps, args.warmup, args.parallel)}
            if use_torch:
                row["torch"] = torch_throughput(bs, args.image_size, dtype, args.steps, args.warmup)
                row["ratio"] = row["jax"] / row["torch"]
            rows.append(row)
            torch_s = f"{row['torch']:12.1f} {row['ratio']:9.2f}" if use_torch else f"{'-':>12} {'-':>9}"
            print(f"{dtype:>5} {bs:>5} {row['jax']:10.1f} {torch_s}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
