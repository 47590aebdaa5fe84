"""The machine's throughput for the FLOP model's ops (epbench.core.flops), measured in the same run.

For every op of a configuration — the same GEMM and convolution shapes the training step runs —
the seconds of one op on this machine, steady state. The FLOP-bound time of a step is then
Σ count · seconds(op), and a case's *fraction of the FLOP bound* is that time over the measured
step time: 1.0 means the step ran its products back to back at the speed they run alone; the rest
goes to element-wise work, launches, copies and the framework.

A backend may offer the measurement through OPTIONAL methods (duck-typed: `getattr`, not part of
`epbench.core.protocols`); the built-in torch and jax backends do, in their `throughput.py`:

    op_seconds(op, *, dtype, device, min_seconds) -> float | None
        seconds of one `op` (an epbench.core.flops op tuple) with the backend's framework on
        `device`, the best of a few repetitions of enough calls to last `min_seconds`; None when the
        backend cannot run that op.
    memory_stats(device, *, reset=False) -> dict | None
        the framework allocator's {"current_bytes", "peak_bytes", "resettable"} on `device`
        (and its peak reset afterwards when `reset` and the framework can); None on the CPU.
    profile_summary(fn, *, device, folder) -> str | None
        run `fn()` under the framework's profiler; a text summary (or where a trace went).

On the CPU every op is also timed with numpy — a GEMM of the op's shape, and for a convolution the
GEMM of its im2col form (B·H'·W', C·k², O), which has the same FLOPs — in a fresh process that
loads numpy only (in the benchmark's own process the frameworks' idle worker threads spin and
steal the two BLAS threads of a small machine, which made numpy 50-100× slower). The limit of an
op is the faster of the backend's and numpy's time: the machine's, not one framework's. On a GPU
only the backend's `op_seconds` counts; without it the fraction is reported as unknown.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from epbench.core.flops import op_flops
from epbench.core.protocols import Backend, OpTimingBackend

MIN_SECONDS = 0.01  # each timed repetition of an op lasts at least this long
REPEATS = 3


def best_seconds(call: Callable[[], Any], *, min_seconds: float, repeats: int = REPEATS) -> float:
    """Seconds of one `call()`: calibrate a count n so that n calls last `min_seconds`, then the
    best of `repeats` runs of n calls, divided by n. `call` must finish its work before it
    returns (synchronise inside it on a device)."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(1, math.ceil(min_seconds / once))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def as_gemm(op: tuple) -> tuple:
    """The GEMM with the FLOPs of `op`: itself, or a convolution's im2col form."""
    if op[0] == "gemm":
        return op
    _, b, c, h, w, o, k, p = op
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    return ("gemm", b * ho * wo, c * k * k, o)


def numpy_op_seconds(op: tuple, *, dtype: str, min_seconds: float = MIN_SECONDS) -> float:
    """Seconds of `op` as a numpy GEMM (`as_gemm`) on the CPU."""
    _, m, k, n = as_gemm(op)
    rng = np.random.default_rng(0)
    a = rng.random((m, k)).astype(dtype)
    b = rng.random((k, n)).astype(dtype)
    out = np.empty((m, n), dtype=dtype)
    return best_seconds(lambda: np.matmul(a, b, out=out), min_seconds=min_seconds)


def numpy_seconds(ops: list[tuple], *, dtype: str, min_seconds: float = MIN_SECONDS) -> list:
    """`numpy_op_seconds` of each op, measured in a fresh Python process that imports numpy only
    (`python -m epbench.measurements.peak`); None for every op when that process fails."""
    if not ops:
        return []
    request = json.dumps({"ops": [list(op) for op in ops], "dtype": dtype, "min": min_seconds})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "epbench.measurements.peak"],
            input=request,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return [None] * len(ops)


def measure_ops(
    backend: Backend,
    ops: Iterable[tuple],
    *,
    dtype: str,
    device: str,
    min_seconds: float = MIN_SECONDS,
) -> dict[tuple, dict[str, Any]]:
    """Per op: {"seconds" (the limit: the faster of the two below), "flops", "flops_per_s",
    "source" (who reached it), "backend_seconds", "numpy_seconds" (CPU only)}. "seconds" is None
    when nothing could time the op (a GPU backend without `op_seconds`)."""
    ops = list(dict.fromkeys(ops))
    timer = backend if isinstance(backend, OpTimingBackend) else None
    on_cpu = device == "cpu"
    reference = numpy_seconds(ops, dtype=dtype, min_seconds=min_seconds) if on_cpu else []
    out: dict[tuple, dict[str, Any]] = {}
    for i, op in enumerate(ops):
        own = (
            timer.op_seconds(op, dtype=dtype, device=device, min_seconds=min_seconds)
            if timer is not None
            else None
        )
        other = reference[i] if on_cpu else None
        timed = [(s, source) for s, source in ((own, backend.name), (other, "numpy")) if s]
        seconds, source = min(timed) if timed else (None, None)
        flops = op_flops(op)
        out[op] = {
            "seconds": seconds,
            "flops": flops,
            "flops_per_s": flops / seconds if seconds else None,
            "source": source,
            "backend_seconds": own,
            "numpy_seconds": other,
        }
    return out


def fastest(*measurements: dict[tuple, dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per op, the entry of `measure_ops` results with the least "seconds" (untimed entries
    last). `epbench.measurements.speed` times the ops before and after a cell's steps and keeps the
    faster,
    so that a slow spell of a shared machine during one of the two does not lower the limit."""
    out: dict[tuple, dict[str, Any]] = {}
    for measured in measurements:
        for op, values in measured.items():
            best = out.get(op)
            if best is None or best["seconds"] is None:
                out[op] = values
            elif values["seconds"] is not None and values["seconds"] < best["seconds"]:
                out[op] = values
    return out


def flop_bound_seconds(ops: Counter, measured: dict[tuple, dict[str, Any]]) -> float | None:
    """Σ count · seconds(op): the time of the step's products run back to back at their measured
    speed (None when an op could not be timed)."""
    total = 0.0
    for op, count in ops.items():
        seconds = measured.get(op, {}).get("seconds")
        if seconds is None:
            return None
        total += count * seconds
    return total


def main() -> None:
    """`python -m epbench.measurements.peak`: read {"ops", "dtype", "min"} as JSON on stdin, print
    the list of `numpy_op_seconds` as one JSON line (see `numpy_seconds`)."""
    request = json.loads(sys.stdin.read())
    seconds = [
        numpy_op_seconds(tuple(op), dtype=request["dtype"], min_seconds=request["min"])
        for op in request["ops"]
    ]
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
