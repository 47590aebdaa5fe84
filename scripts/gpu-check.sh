#!/usr/bin/env bash
# GPU check: the speed suite and the parity tests on CUDA, for the torch and jax backends, in
# under 8 minutes; records go to results/ (or $OUT). Run from the repository root:
#
#     scripts/gpu-check.sh                  # paper settings on cuda
#     PRESET=quick DEVICE=cpu scripts/gpu-check.sh   # a dry run of the same steps on the CPU
#
# Needs CUDA builds of torch and jax, with numpy, pluggy, tabulate, tqdm, jaxtyping and pytest.
# epbench and its two backends are used as installed (pip install -e . -e backends/epbench-torch
# -e backends/epbench-jax) or, where they are not (a GPU image without hatchling or network),
# straight from this checkout (BOOTSTRAP=1 forces that).
# Exit code: 0 when every step passed, 1 otherwise (each step's status is printed at the end).
set -u

PY=${PYTHON:-python3}
OUT=${OUT:-results}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
BACKENDS=${BACKENDS:-torch,jax}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # jax shares the GPU with torch in one process
if [ "${BOOTSTRAP:-0}" = 1 ] || ! "$PY" -c "import epbench, epbench_torch, epbench_jax" 2>/dev/null; then
    # Run from the checkout; a throwaway dist-info declares the backends' entry points, so that
    # they load as installed plugins do (epbench.plugins.manager reads the `epbench` entry-point group).
    SITE=$(mktemp -d)
    INFO="$SITE/epbench_checkout-0.dist-info"
    mkdir -p "$INFO"
    printf 'Metadata-Version: 2.1\nName: epbench-checkout\nVersion: 0\n' >"$INFO/METADATA"
    printf '[epbench]\ntorch = epbench_torch.plugin\njax = epbench_jax.plugin\n' >"$INFO/entry_points.txt"
    export PYTHONPATH="$SITE:$PWD:$PWD/backends/epbench-torch:$PWD/backends/epbench-jax${PYTHONPATH:+:$PYTHONPATH}"
    echo "epbench from the checkout (PYTHONPATH=$PYTHONPATH)"
fi
declare -a SUMMARY=()
FAILED=0

step() {  # step NAME SECONDS COMMAND…: run with a time limit, remember how it went
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("ok      ${took}s  $name")
    else
        SUMMARY+=("FAILED  ${took}s  $name (exit $rc)")
        FAILED=1
    fi
}

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
fi
step "backends" 60 "$PY" -m epbench backends
# One training step of EP, EP symmetric and BPTT for toy, P-1h, P-2h, EB-1h and P-conv, and
# P-1h's peak memory against K, on every backend (about 4 minutes on an H100).
step "speed suite" 330 "$PY" -m epbench run speed --preset "$PRESET" --backend "$BACKENDS" \
    --device "$DEVICE" --out "$OUT" --quiet
# The same cells, parameters and batch on torch and jax: states, traces and training steps.
step "parity speed cells (float32)" 120 "$PY" -m epbench parity speed --preset quick \
    --backend "$BACKENDS" --device "$DEVICE" --out "$OUT"
step "parity toy (float64)" 60 "$PY" -m epbench parity toy --preset quick \
    --backend "$BACKENDS" --device "$DEVICE" --dtype float64 --out "$OUT"
if [ "$DEVICE" = cuda ]; then
    # The backends' own GPU tests: the same phases on cuda and on the CPU.
    step "pytest -m gpu" 120 "$PY" -m pytest -q -m gpu backends
fi

echo
echo "=== summary (records in $OUT/)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
