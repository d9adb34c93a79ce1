"""ResNet-50 training throughput (images/s): gradtune-jax vs torchvision/PyTorch on the same machine.

    python benchmarks/bench_resnet50.py                       # CPU-friendly: 64 px, batches 8 16
    python benchmarks/bench_resnet50.py --image-size 224 --batch-sizes 128 256 --steps 20 \
        --parallel jit pmap --json resnet50.json             # the GPU check's setting

One SGD-momentum training step (forward, backward, update; BatchNorm in train mode; 1000
classes) is timed after `--warmup` untimed steps (which include compilation), for each batch
size, precision and JAX parallel mode: fp32, and bf16 (JAX: bf16 compute with fp32 params and
loss; PyTorch: `torch.autocast` bf16, i.e. AMP). JAX runs over all local devices in each
`--parallel` mode (global batch = batch size); PyTorch runs on one device (CUDA if available,
else CPU; on CUDA with `channels_last` and `cudnn.benchmark`, its usual fast setting), once per
(dtype, batch) and shared by the modes. Ratios are JAX / PyTorch from the same run.
`--no-torch` skips PyTorch; it is skipped anyway, with the reason recorded, when it does not
import. Weights are random (numpy, no `init` compilation); inputs are one fixed random batch.

`--json FILE` is rewritten (atomically) after every measured row, so a run cut short by a
time limit still leaves the rows it finished: `{"meta": {...versions, devices, precision
settings...}, "torch": {"used", "reason"}, "rows": [...]}`.

JAX and PyTorch share one GPU in this process: JAX's preallocation of 75% of its memory is turned
off here (`XLA_PYTHON_CLIENT_PREALLOCATE=false` unless set), and PyTorch's cache is emptied after
each of its measurements, so neither starves the other at batch 256.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX's backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from gradtune_jax.io import atomic_write_json  # noqa: E402
from gradtune_jax.models import create_model  # noqa: E402
from gradtune_jax.models.testing import import_torchvision, numpy_variables  # noqa: E402
from gradtune_jax.train.parallel import MODES, DataParallel, data_parallel  # noqa: E402
from gradtune_jax.train.state import TrainState, create_state  # noqa: E402

DTYPES = ("fp32", "bf16")
NUM_CLASSES = 1000
ARCHS = ("resnet50", "resnet18")


def jax_setup(batch_size: int, image_size: int, dtype: str, parallel: str,
              arch: str = "resnet50") -> tuple[DataParallel, TrainState, Any]:
    """The placed train step, state and batch of one setting (random weights and inputs, seed 0)."""
    model = create_model(arch, NUM_CLASSES, dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32)
    batch = {"x": x, "y": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
             "g": np.zeros(batch_size, np.int32), "w": np.ones(batch_size, np.float32)}
    variables = numpy_variables(model, x[:1])
    par = data_parallel(parallel)
    state = par.place(create_state(model, variables, optax.sgd(0.01, momentum=0.9)))
    return par, state, par.put(batch)


def jax_throughput(batch_size: int, image_size: int, dtype: str, steps: int, warmup: int,
                   parallel: str, arch: str = "resnet50") -> dict:
    """`{"img_per_s", "step_ms", "warmup_s"}` of the library's train step on ResNet-50 (`arch`);
    `warmup_s` is the wall time of the untimed steps (compilation included)."""
    par, state, placed = jax_setup(batch_size, image_size, dtype, parallel, arch)
    t = time.perf_counter()
    metrics = None
    for _ in range(warmup):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    warmup_s = time.perf_counter() - t
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = par.step(state, placed)
    jax.block_until_ready((state, metrics))
    secs = time.perf_counter() - start
    return {"img_per_s": batch_size * steps / secs, "step_ms": 1e3 * secs / steps, "warmup_s": warmup_s}


def torch_throughput(batch_size: int, image_size: int, dtype: str, steps: int, warmup: int,
                     arch: str = "resnet50") -> dict:
    """`{"img_per_s", "step_ms", "warmup_s"}` of a torchvision ResNet-50 (`arch`) training step (PyTorch eager)."""
    import torch

    torchvision = import_torchvision()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    torch.backends.cudnn.benchmark = cuda
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    autocast = (torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    secs = time.perf_counter() - start
    del model, opt, x, y
    if cuda:
        torch.cuda.empty_cache()  # hand the cached blocks back for JAX's turn
    return {"img_per_s": batch_size * steps / secs, "step_ms": 1e3 * secs / steps, "warmup_s": warmup_s}


def torch_status() -> tuple[bool, str]:
    """(usable, reason): whether torch + torchvision import here, and why not."""
    try:
        import_torchvision()
    except (ImportError, RuntimeError) as e:
        return False, f"torch/torchvision do not import: {type(e).__name__}: {e}"
    return True, ""


def meta(args: argparse.Namespace) -> dict:
    """Run settings, versions, devices and the precision defaults that decide fp32 speed on GPU."""
    out = {"python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
           "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
           "arch": args.arch, "image_size": args.image_size, "steps": args.steps, "warmup": args.warmup}
    try:
        import torch

        out.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available(),
                   torch_threads=torch.get_num_threads(),
                   torch_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16], help="global batch sizes")
    p.add_argument("--image-size", type=int, default=64, help="square input size in pixels (224: ImageNet)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--parallel", nargs="+", choices=MODES, default=["jit"], help="JAX data-parallel mode(s)")
    p.add_argument("--arch", choices=ARCHS, default="resnet50", help="ResNet depth (smoke: resnet18)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--json", help="also write meta and rows to this JSON file (after every row)")
    args = p.parse_args(argv)
    use_torch, reason = (False, "--no-torch") if args.no_torch else torch_status()
    info = meta(args)
    print(f"JAX {jax.__version__} on {jax.device_count()} x {info['device_kind']}; {args.arch}, image {args.image_size}px; "
          f"{args.steps} timed steps after {args.warmup} warm-up; parallel={','.join(args.parallel)}")
    if use_torch:
        print(f"PyTorch {info['torch']} on {'cuda' if info['torch_cuda'] else 'cpu'} ({info['torch_threads']} threads)")
    else:
        print(f"PyTorch skipped: {reason}")
    print(f"{'dtype':>5} {'batch':>5} {'mode':>5} {'jax img/s':>10} {'torch img/s':>12} {'jax/torch':>9}")
    rows: list[dict] = []

    def save() -> None:
        if args.json:
            atomic_write_json(args.json, {"meta": info, "torch": {"used": use_torch, "reason": reason},
                                          "rows": rows})

    for dtype in args.dtypes:
        for bs in args.batch_sizes:
            ref = torch_throughput(bs, args.image_size, dtype, args.steps, args.warmup, args.arch) if use_torch else None
            for mode in args.parallel:
                got = jax_throughput(bs, args.image_size, dtype, args.steps, args.warmup, mode, args.arch)
                row = {"arch": args.arch, "dtype": dtype, "batch_size": bs, "image_size": args.image_size, "parallel": mode,
                       "jax": got["img_per_s"], "jax_step_ms": got["step_ms"], "jax_warmup_s": got["warmup_s"]}
                if ref is not None:
                    row.update(torch=ref["img_per_s"], torch_step_ms=ref["step_ms"], torch_warmup_s=ref["warmup_s"],
                               ratio=got["img_per_s"] / ref["img_per_s"])
                rows.append(row)
                save()
                torch_s = f"{row['torch']:12.1f} {row['ratio']:9.2f}" if ref else f"{'-':>12} {'-':>9}"
                print(f"{dtype:>5} {bs:>5} {mode:>5} {row['jax']:10.1f} {torch_s}", flush=True)
    save()
    return rows


if __name__ == "__main__":
    main()
