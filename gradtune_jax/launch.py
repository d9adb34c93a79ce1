"""Run one command as N local JAX processes (fake CPU devices, a localhost coordinator).

    python -m gradtune_jax.launch -n 2 -- -m experiments.table1 --quick --out /tmp/mh
    python -m gradtune_jax.launch -n 2 --devices-per-process 2 -- script.py ARGS

Everything after `--` is passed to the Python interpreter of every process. Each process gets
`JAX_PLATFORMS=cpu`, `JAX_NUM_CPU_DEVICES`, and `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
`JAX_PROCESS_ID`, which `gradtune_jax.distributed.initialize` (called by every CLI) reads. Their
output is streamed line by line with a `[pI]` prefix. When one process fails the others are
stopped (they would wait for it forever in the next collective). Exit status: the worst one (the
first failure's, not that of the processes stopped after it; 0 when all succeed). For testing and demos on one machine; on a real cluster
start one process per host with its own launcher (docs/parallelism.md).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

from gradtune_jax.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(i: int, n: int, devices: int, port: int, base: dict | None = None) -> dict:
    """Environment of local process `i` of `n` with `devices` fake CPU devices."""
    env = dict(os.environ if base is None else base)
    env.update({"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices), ENV_COORDINATOR: f"127.0.0.1:{port}",
                ENV_NUM_PROCESSES: str(n), ENV_PROCESS_ID: str(i), "PYTHONUNBUFFERED": "1"})
    return env


def _pump(stream, prefix: str, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line)
            out.flush()
    stream.close()


def launch(args: Sequence[str], n: int, devices: int = 2, grace: float = 10.0, prefix: bool = True,
           env: dict | None = None, cwd: str | None = None) -> int:
    """Run `python ARGS` as `n` processes of one JAX job on this machine; return the worst exit code.

    `devices`: fake CPU devices per process. `grace`: seconds the others get to finish after one
    process fails before they are terminated. `env`: base environment (default `os.environ`).
    """
    if n < 1 or devices < 1:
        raise ValueError(f"need at least one process and one device, got -n {n}, --devices-per-process {devices}")
    port = free_port()
    procs, threads, lock = [], [], threading.Lock()
    for i in range(n):
        p = subprocess.Popen([sys.executable, *args], env=process_env(i, n, devices, port, env), cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                             start_new_session=True)
        procs.append(p)
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            t = threading.Thread(target=_pump, args=(stream, f"[p{i}] " if prefix else "", out, lock), daemon=True)
            t.start()
            threads.append(t)
    failed_at, first_failure = None, None
    try:
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.monotonic()
                first_failure = worst([c for c in codes if c is not None])
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGTERM)
                failed_at = float("inf")  # terminate once; wait for them below
            time.sleep(0.1)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            p.wait()
    for t in threads:
        t.join()
    return first_failure if first_failure is not None else worst([p.returncode for p in procs])


def worst(codes: Sequence[int]) -> int:
    """0 if all are 0, else the first non-zero exit status (a signal -S becomes 128 + S)."""
    for c in codes:
        if c != 0:
            return 128 - c if c < 0 else c
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m gradtune_jax.launch -n N [--devices-per-process D] -- PYTHON_ARGS "
              "(e.g. -- -m experiments.table1 --quick)", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m gradtune_jax.launch",
                                description="Run `python PYTHON_ARGS` as N local JAX processes with fake CPU devices.")
    p.add_argument("-n", "--num-processes", type=int, default=2, help="number of processes (default 2)")
    p.add_argument("--devices-per-process", type=int, default=2, help="fake CPU devices per process (default 2)")
    p.add_argument("--no-prefix", action="store_true", help="do not prefix output lines with [pI]")
    p.add_argument("--grace", type=float, default=10.0, help="seconds before the others are stopped after a failure")
    opts = p.parse_args(argv[:cut])
    if not argv[cut + 1:]:
        p.error("nothing to run after --")
    if opts.num_processes < 1 or opts.devices_per_process < 1:
        p.error("-n and --devices-per-process must be positive")
    return launch(argv[cut + 1:], opts.num_processes, opts.devices_per_process, opts.grace, not opts.no_prefix)


if __name__ == "__main__":
    sys.exit(main())
