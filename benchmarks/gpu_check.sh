#!/usr/bin/env bash
# The prepared device check (issue 15): one command, every figure against a baseline measured in
# the same run, JSON + one combined log under $OUT. See docs/benchmarks.md ("GPU check").
#
#   bash benchmarks/gpu_check.sh                          # on the GPU machine: full sizes, ~8 min budget
#   JAX_PLATFORMS=cpu bash benchmarks/gpu_check.sh --smoke  # here: tiny sizes, same code paths
#   bash benchmarks/gpu_check.sh --only 1,2 --budget 200  # rerun some steps (issue numbering 1-6)
#
# Options: --smoke (tiny sizes, CPU-friendly), --budget SECONDS (total; default 480, smoke 900),
# --only LIST (issue step numbers: 1 pytest, 2 table1, 3 resnet50, 4 gradnorm, 5 trak, 6 profile;
# the environment step always runs), --install (pip install -e . --no-deps first; by default the
# repository is put on PYTHONPATH instead: nothing is installed), --full-pmap (pmap over the whole
# bf16/fp32 x 256/128 grid, as jit; default bf16 256 only: each cell is one more ResNet-50 compile).
# Environment: OUT (results folder; default a new temp folder), PYTHON (default python3), GIT_COMMIT
# (recorded when the tree has no .git), KEEP_WORK=1 (keep the scratch folder: traces, step JSON),
# GPU_CHECK_PYTEST (pytest targets instead of tests/, e.g. "tests/test_train.py tests/test_parallel.py").
#
# Steps run in this order, each under `timeout` with its own cap (cut to what is left of the
# budget; skipped, and recorded as such, when under 20 s is left): env, 4 gradnorm, 3 resnet50
# (jit: bf16/fp32 x 256/128 with torch), 3 resnet50 pmap (bf16 256), 6 profile, 5 trak, 1 pytest
# (+ the GPU failures rerun on CPU), 2 table1. A failing step is recorded and the next one runs.
# $OUT/gpu_check.json is rewritten after every step, so a run cut short still reports what it did.
# Files in $OUT (at most 8 come back from the device machine): gpu_check.json, gpu_check.log
# (all steps' output), summary.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SMOKE=0
BUDGET=
ONLY=1,2,3,4,5,6
INSTALL=0
FULL_PMAP=0
while (($#)); do
  case $1 in
    --smoke) SMOKE=1 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --only) ONLY=${2:?--only needs a list such as 1,3}; shift ;;
    --install) INSTALL=1 ;;
    --full-pmap) FULL_PMAP=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (expected --smoke, --budget S, --only LIST, --install, --full-pmap)" >&2; exit 2 ;;
  esac
  shift
done
[[ $ONLY =~ ^[1-6](,[1-6])*$ ]] || { echo "gpu_check.sh: --only '$ONLY': expected step numbers 1-6, comma-separated" >&2; exit 2; }
[[ -z $BUDGET || $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget '$BUDGET': expected whole seconds" >&2; exit 2; }
BUDGET=${BUDGET:-$((SMOKE ? 900 : 480))}
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX")  # per-step JSON, traces, caches: not sent back
if [[ ${KEEP_WORK:-0} != 1 ]]; then trap 'rm -rf "$WORK"' EXIT; fi
LOG=$OUT/gpu_check.log
: >"$LOG"
export ROOT SMOKE FULL_PMAP PY WORK GIT_COMMIT=${GIT_COMMIT:-} PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
T0=$SECONDS
echo "gpu_check: smoke=$SMOKE budget=${BUDGET}s only=$ONLY out=$OUT python=$PY" | tee -a "$LOG"
# Wheels carried to the device machine (no registry there): `.whl/*.whl`, e.g. traker (docs/benchmarks.md).
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$ROOT"/.whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH=$PYTHONPATH:$WORK/site  # ahead of site-packages: a carried version wins
    echo "gpu_check: installed $(cd "$ROOT/.whl" && echo *.whl) into $WORK/site" | tee -a "$LOG"
  else
    echo "gpu_check: could not install .whl/*.whl (see the log); going on without them" | tee -a "$LOG"
  fi
fi
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STEPS_JSONL=$WORK/steps.jsonl
: >"$STEPS_JSONL"

selected() { [[ ,$ONLY, == *,$1,* ]]; }

# ---------------------------------------------------------------- the steps (each a function)
step_env() {
  "$PY" - <<'EOF'
import importlib.metadata as md, json, os, platform, subprocess, sys
out = {"python": platform.python_version(), "executable": sys.executable, "packages": {}}
for p in ("gradtune-jax", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "flax", "optax",
          "orbax-checkpoint", "numpy", "scipy", "scikit-learn", "transformers", "tensorflow-datasets",
          "torch", "torchvision", "traker", "pytest", "pytest-xdist", "pytest-timeout"):
    try:
        out["packages"][p] = md.version(p)
    except md.PackageNotFoundError:
        out["packages"][p] = None
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
except (OSError, subprocess.SubprocessError) as e:
    out["nvidia_smi"] = f"unavailable: {type(e).__name__}"
try:
    import jax
    d = jax.devices()
    out.update(backend=jax.default_backend(), jax_devices=[str(x) for x in d], device_kind=d[0].device_kind,
               jax_platforms_env=os.environ.get("JAX_PLATFORMS"))
    stats = d[0].memory_stats() if hasattr(d[0], "memory_stats") else None
    out["device_bytes_limit"] = (stats or {}).get("bytes_limit")
except Exception as e:  # noqa: BLE001
    out["jax_error"] = f"{type(e).__name__}: {e}"
try:
    import gradtune_jax
    out["gradtune_jax_path"] = os.path.dirname(gradtune_jax.__file__)
except Exception as e:  # noqa: BLE001
    out["gradtune_jax_error"] = f"{type(e).__name__}: {e}"
try:  # the device machine's copy of the tree may have no .git: then pass GIT_COMMIT=<sha>
    r = subprocess.run(["git", "-C", os.environ["ROOT"], "rev-parse", "HEAD"], capture_output=True, text=True)
    out["git_commit"] = r.stdout.strip() or None
    if out["git_commit"]:
        r = subprocess.run(["git", "-C", os.environ["ROOT"], "status", "--porcelain"], capture_output=True, text=True)
        out["git_dirty_files"] = len(r.stdout.splitlines())
except OSError:
    out["git_commit"] = None
json.dump(out, open(os.path.join(os.environ["WORK"], "env.json"), "w"), indent=1)
print(json.dumps(out, indent=1))
EOF
}

step_install() {
  "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e "$ROOT"
}

step_gradnorm() {
  if ((SMOKE)); then set -- --n 4096 --dim 64 --repeats 3; else set -- --n 500000 --dim 2048 --classes 2 --repeats 5; fi
  "$PY" -m benchmarks.bench_gradnorm "$@" --json "$WORK/gradnorm.json"
}

# One persistent compilation cache for the ResNet steps only: the profile reuses the benchmark's
# bf16 batch-256 executable instead of compiling it again.
resnet_cache() { export JAX_COMPILATION_CACHE_DIR=$WORK/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1; }

step_resnet50() {
  resnet_cache
  if ((SMOKE)); then
    set -- --arch resnet18 --image-size 32 --batch-sizes 2 --dtypes bf16 fp32 --steps 1 --warmup 1
  else
    set -- --image-size 224 --batch-sizes 256 128 --dtypes bf16 fp32 --steps 20 --warmup 3
  fi
  "$PY" benchmarks/bench_resnet50.py "$@" --parallel jit --json "$WORK/resnet50_jit.json"
}

step_resnet50_pmap() {
  if ((SMOKE)); then
    set -- --arch resnet18 --image-size 32 --batch-sizes 2 --dtypes bf16 --steps 1 --warmup 1
  elif ((FULL_PMAP)); then
    set -- --image-size 224 --batch-sizes 256 128 --dtypes bf16 fp32 --steps 20 --warmup 3
  else
    set -- --image-size 224 --batch-sizes 256 --dtypes bf16 --steps 20 --warmup 3
  fi
  "$PY" benchmarks/bench_resnet50.py "$@" --parallel pmap --no-torch --json "$WORK/resnet50_pmap.json"
}

step_profile() {
  resnet_cache
  if ((SMOKE)); then
    set -- --arch resnet18 --image-size 32 --batch-size 2 --steps 2 --warmup 1 --matmul-size 256
  else
    set -- --image-size 224 --batch-size 256 --steps 20 --warmup 2 --matmul-size 8192
  fi
  "$PY" -m benchmarks.profile_resnet50 "$@" --dtype bf16 --parallel jit --trace-dir "$WORK/trace" \
    --json "$WORK/profile.json"
}

step_trak() {
  # Issue 13's benchmark (its docstring's GPU-check command, ResNet-18 only: issue 15 asks for it):
  # dense vs factorized projection, and traker 0.3.2 when torch and traker import.
  if [[ -f benchmarks/bench_trak_factorized.py ]]; then
    if ((SMOKE)); then
      set -- --smoke --size 32 --batch 4 --batches 2 --proj-dim 64 --timeout 100
    else
      set -- --smoke --size 224 --batch 32 --batches 5 --timeout 45
    fi
    "$PY" -m benchmarks.bench_trak_factorized "$@" --models resnet18 --json "$WORK/trak.json"
    return
  fi
  # Fallback while that script does not exist: the MLP benchmark (ours vs traker, host RSS) at the
  # size of its CPU table in docs/benchmarks.md (its defaults).
  if ((SMOKE)); then set -- --n 256 --batch 64 --proj-dim 64 --hidden 64; else set -- --n 1024 --batch 128 --proj-dim 512 --hidden 256; fi
  "$PY" -m benchmarks.bench_trak "$@" | tee "$WORK/trak.stdout"
  grep '^{"config"' "$WORK/trak.stdout" | tail -n 1 >"$WORK/trak.json"
}

step_pytest() {
  local args=(-q -p no:cacheprovider -p benchmarks.pytest_jsonl --continue-on-collection-errors -rfE)
  if "$PY" -c "import xdist" 2>/dev/null && ((!SMOKE)); then args+=(-n 12); fi
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then args+=(--timeout 90); fi
  if [[ -n ${GPU_CHECK_PYTEST:-} ]]; then read -ra targets <<<"$GPU_CHECK_PYTEST"; args+=("${targets[@]}")
  elif ((SMOKE)); then args+=(tests/test_kernels.py tests/test_metrics.py); else args+=(tests); fi
  : >"$WORK/pytest.jsonl"
  # Several workers share the GPU: grow memory on demand instead of each taking 75% of it.
  GPU_CHECK_PYTEST_JSONL=$WORK/pytest.jsonl XLA_PYTHON_CLIENT_PREALLOCATE=false \
    "$PY" -m pytest "${args[@]}"
}

step_pytest_cpu_rerun() {
  # The tests that failed on the device, again on this machine's CPU: "GPU only" vs "fails here anyway".
  "$PY" - <<'EOF' >"$WORK/pytest_failed_ids.txt"
import json, os
rootdir, seen = os.environ["ROOT"], []
for line in open(os.path.join(os.environ["WORK"], "pytest.jsonl")):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r["when"] == "session":
        rootdir = r["rootdir"]
    elif r["outcome"] == "failed" and r["when"] != "collect" and r["nodeid"] not in seen:
        seen.append(r["nodeid"])
print("\n".join([rootdir] + seen[:40]) if seen else "")
EOF
  if [[ ! -s $WORK/pytest_failed_ids.txt ]]; then echo "no failed tests to rerun"; return 0; fi
  : >"$WORK/pytest_cpu.jsonl"
  mapfile -t ids <"$WORK/pytest_failed_ids.txt"
  cd "${ids[0]}"  # node ids are relative to the first run's rootdir
  GPU_CHECK_PYTEST_JSONL=$WORK/pytest_cpu.jsonl JAX_PLATFORMS=cpu \
    "$PY" -m pytest -q -p no:cacheprovider -p benchmarks.pytest_jsonl -rfE "${ids[@]:1}"
}

step_table1() {
  if ((SMOKE)); then set -- --quick; else set --; fi
  "$PY" -m experiments.table1 "$@" --no-progress --out "$WORK/table1"
}

export -f resnet_cache step_env step_install step_gradnorm step_resnet50 step_resnet50_pmap step_profile step_trak \
  step_pytest step_pytest_cpu_rerun step_table1

# ---------------------------------------------------------------- running and recording
assemble() {  # rewrite $OUT/gpu_check.json and $OUT/summary.txt from what the steps left in $WORK
  STARTED=$STARTED BUDGET=$BUDGET ONLY=$ONLY OUT=$OUT ELAPSED=$((SECONDS - T0)) \
    "$PY" "$ROOT/benchmarks/gpu_check_report.py" "$WORK" "$OUT" || echo "gpu_check: report failed (rc $?)" | tee -a "$LOG"
}

run_step() {  # run_step KEY CAP_SECONDS: run step_KEY under timeout, record status, rewrite the report
  local key=$1 cap=$2 left rc=0 t status reason=
  left=$((BUDGET - (SECONDS - T0)))
  if ((left < 20)); then
    status=skipped reason="budget: ${left}s left of ${BUDGET}s"
    printf '{"key": "%s", "status": "%s", "reason": "%s", "cap_s": %d, "seconds": 0}\n' "$key" "$status" "$reason" "$cap" >>"$STEPS_JSONL"
    echo "--- $key: $status ($reason)" | tee -a "$LOG"
    return 0
  fi
  ((cap > left)) && cap=$left
  echo "=== $key (cap ${cap}s, ${left}s of budget left) $(date -u +%H:%M:%S)" >>"$LOG"
  t=$SECONDS
  timeout -k 10 "$cap" bash -c "set -euo pipefail; step_$key" >>"$LOG" 2>&1 || rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout reason="killed at its ${cap}s cap" ;;
    *) status=failed reason="exit status $rc" ;;
  esac
  printf '{"key": "%s", "status": "%s", "reason": "%s", "rc": %d, "cap_s": %d, "seconds": %d}\n' \
    "$key" "$status" "$reason" "$rc" "$cap" "$((SECONDS - t))" >>"$STEPS_JSONL"
  echo "--- $key: $status in $((SECONDS - t))s${reason:+ ($reason)}" | tee -a "$LOG"
  assemble >/dev/null
}

run_step env 60
if ((INSTALL)); then run_step install 60; fi
if selected 4; then run_step gradnorm 45; fi
if selected 3; then run_step resnet50 140; run_step resnet50_pmap "$((FULL_PMAP ? 140 : 50))"; fi
if selected 6; then run_step profile 60; fi
if selected 5; then run_step trak "$((SMOKE ? 300 : 120))"; fi
if selected 1; then
  run_step pytest 110
  if [[ -s $WORK/pytest.jsonl ]] && grep -q '"outcome": "failed"' "$WORK/pytest.jsonl"; then run_step pytest_cpu_rerun 40; fi
fi
if selected 2; then run_step table1 "$((SMOKE ? 300 : 120))"; fi

assemble | tee -a "$LOG"
echo "gpu_check: wrote $OUT/gpu_check.json, $OUT/summary.txt, $OUT/gpu_check.log in $((SECONDS - T0))s"
