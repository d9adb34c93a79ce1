"""Every table and figure of both papers on one dataset, and an index page linking them.

    python -m experiments.all                          # embedded digits, full size
    python -m experiments.all --quick --out /tmp/all   # smoke test
    python -m experiments.all --dataset waterbirds --data-dir PATH --weights W --only table1,gradnorms

Runs, in order, each into `--out/<step>/`: table1, gradnorms, finetune_size, ablations (sharing
one per-seed ERM feature cache in `--out/erm`), debias_table (its rows only: the WGA-versus-K
curve comes from attribution, with its baselines) and attribution; then writes `--out/index.md`.
A failing step is reported and the others still run (exit status 1). Rerunning resumes; steps
left out with --only keep their earlier outputs in the index.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import time
from typing import Sequence

from experiments import cli, common

MODULE = "experiments.all"
# step -> (title, accepts --erm-cache / --image-size / --tokenizer-dir, extra arguments)
STEPS = {
    "table1": ("GradTune Table 1: ERM, Random finetune, GradTune", True, ()),
    "gradnorms": ("GradTune Fig. 1(b)/2: held-out gradient norms per group", True, ()),
    "finetune_size": ("GradTune Fig. 3: WGA versus fine-tuning set size", True, ()),
    "ablations": ("GradTune Tables 4 and 5: class balance, fine-tuning versus retraining", True, ()),
    "debias_table": ("Debiasing by attribution Table 1/2: ERM, TRAK, Auto-TRAK and baselines", False,
                     ("--curve", "none")),
    "attribution": ("Debiasing by attribution Fig. 2, appendix F, Auto-TRAK bias discovery", False, ()),
}


def parse_steps(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown steps {unknown or text!r}; expected some of {','.join(STEPS)}")
    return names


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=f"python -m {MODULE}",
                              description="Run every table and figure of both papers and write index.md.")
    cli.add_data_args(p)
    r = cli.add_run_args(p, "all", erm_cache=False)
    r.add_argument("--only", type=parse_steps, default=list(STEPS),
                   help=f"comma list of steps (default all: {','.join(STEPS)})")
    return p


def step_argv(args, step: str, out: str) -> list[str]:
    """The arguments `step` gets: the data options given here, --seeds, --quick, --no-progress,
    its own --out (and the shared --erm-cache)."""
    _, shared_cache, extra = STEPS[step]
    argv = ["--dataset", args.dataset, "--seeds", ",".join(map(str, args.seeds)), "--data-seed", str(args.data_seed),
            "--out", os.path.join(out, step)]
    opts = [("--data-dir", args.data_dir), ("--model", args.model), ("--weights", args.weights)]
    if shared_cache:
        opts += [("--image-size", args.image_size), ("--tokenizer-dir", args.tokenizer_dir),
                 ("--erm-cache", os.path.join(out, "erm"))]
    argv += [a for flag, val in opts if val is not None for a in (flag, str(val))]
    argv += [flag for flag, on in (("--quick", args.quick), ("--no-progress", args.no_progress)) if on]
    return argv + list(extra)


def index_page(out: str, status: dict[str, tuple[str, str]], argv: Sequence[str] | None) -> str:
    """Markdown linking every table (.md, .csv) and embedding every plot (.png) of the steps;
    `status` maps a step to its command line and outcome."""
    lines = ["# gradtune-jax: every table and figure\n", f"Command: `{cli.command_line(MODULE, argv)}`\n"]
    for step, (command, state) in status.items():
        lines.append(f"## {STEPS[step][0]}\n")
        lines.append(f"`{command}` - {state}\n")
        folder = os.path.join(out, step)
        files = sorted(glob.glob(os.path.join(folder, "*.md")) + glob.glob(os.path.join(folder, "*.csv")))
        if files:
            lines.append("Tables: " + ", ".join(f"[{os.path.basename(f)}]({step}/{os.path.basename(f)})"
                                                for f in files) + "\n")
        for png in sorted(glob.glob(os.path.join(folder, "*.png"))):
            name = os.path.basename(png)
            lines.append(f"![{step} {name}]({step}/{name})\n")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = cli.out_dir(args, "all")
    status = {}
    t0 = time.perf_counter()
    for step in args.only:
        sub = step_argv(args, step, out)
        command = f"python -m experiments.{step} {' '.join(sub)}"
        print(f"\n=== {step}: {command}", flush=True)
        t = time.perf_counter()
        rc = common.run_cli(importlib.import_module(f"experiments.{step}").main, sub)
        status[step] = (command, f"ok ({time.perf_counter() - t:.0f} s)" if rc == 0 else f"failed (exit status {rc})")
        print(f"=== {step}: {status[step][1]}", flush=True)
    for step in STEPS:  # outputs of earlier invocations stay linked
        if step not in status and os.path.isdir(os.path.join(out, step)):
            status[step] = (f"python -m experiments.{step} {' '.join(step_argv(args, step, out))}", "earlier run")
    status = {step: status[step] for step in STEPS if step in status}
    common.atomic_write_text(os.path.join(out, "index.md"), index_page(out, status, argv))
    print(f"\nwrote {out}/index.md ({time.perf_counter() - t0:.0f} s)")
    return 0 if all(state.startswith("ok") for _, state in status.values()) else 1


if __name__ == "__main__":
    sys.exit(common.run_cli(main))
