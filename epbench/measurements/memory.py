"""The `memory` measurement: peak memory of one training step against K (docs/theory.md §6.2: BPTT
keeps the graph of the last K steps, memory O(K); EP keeps none, O(1) in K).

For K in SWEEP_K and each algorithm of SWEEP_ALGORITHMS (`ep` one-sided, `bptt`), one case runs in
its own Python process (`python -m epbench.measurements.memory`, the case as JSON on stdin; WORKERS
of them side by side), so that no case inherits another's allocations or compilations: build, load,
one training step (warm-up and compilation), then the measured step. T is max(T, K) so that
every K fits in the free phase.

    CPU    the process's resident set: freed memory is handed back to the OS (`malloc_trim`),
           the peak (VmHWM) reset, then `baseline_bytes` = VmRSS before the measured step and
           `peak_memory_bytes` = VmHWM after it. `step_memory_bytes` = peak − baseline: what the
           step itself allocated.
    GPU    the framework allocator's statistics (the backend's optional `memory_stats`): torch
           resets its peak before the measured step; jax cannot, so its baseline is taken before
           the warm-up step (whose peak is the measured step's).

The record gets `metrics["memory"]`: the K values, and per algorithm the lists
`peak_memory_bytes`, `step_memory_bytes`, `baseline_bytes`, the least-squares slope of the step
memory in bytes per unit of K (`slope_bytes_per_k`), and `variation` = (max − min) / min of the
peak over K.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from epbench.core.errors import EpbenchError
from epbench.core.measurement import Cell, Output
from epbench.core.process_memory import peak_memory_bytes, reset_peak_memory, rss_bytes, trim
from epbench.core.protocols import Backend, MemoryStatsBackend
from epbench.core.spec import TaskSpec

SWEEP_K = (10, 20, 40, 80, 160)
SWEEP_ALGORITHMS = ("ep", "bptt")
CASE_TIMEOUT = 600  # seconds per case
WORKERS = 2  # cases run side by side (each in its own process: memory does not interfere)


def measure_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process (module doc) and return its numbers."""
    from epbench.config.tasks import build_spec
    from epbench.core.params import init_params
    from epbench.measurements.speed import step_function
    from epbench.plugins.registry import Registry

    spec = build_spec(
        case["config"],
        name=case["name"],
        cell=case["cell"],
        preset=case["preset"],
        variant=tuple(tuple(v) for v in case["variant"]),
        where=case["cell"],
    )
    dtype, device = case["dtype"], case["device"]
    backend = Registry().get_backend(case["backend"])
    rng = np.random.default_rng(case["seed"])
    x = rng.random((spec.data.batch, spec.model.inputs)).astype(dtype)
    y = np.eye(spec.model.outputs, dtype=dtype)[rng.integers(0, spec.model.outputs, len(x))]
    net = backend.build(spec.model, dtype=dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=case["algorithm"])
    params = net.load(init_params(spec.model, seed=case["seed"], dtype=dtype))
    stats = (
        backend.memory_stats
        if device != "cpu" and isinstance(backend, MemoryStatsBackend)
        else None
    )
    before = stats(device, reset=True) if stats else None
    params, _, _ = step(params)  # warm-up and compilation
    net.synchronize()
    if before is not None and before["resettable"]:
        before = stats(device, reset=True)
    if before is None:
        trim()
        reset_peak_memory()
        baseline = rss_bytes()
    else:
        baseline = before["current_bytes"]
    params, _, _ = step(params)
    net.synchronize()
    if before is None:
        peak, method = peak_memory_bytes(), "process"
    else:
        peak, method = stats(device)["peak_bytes"], "allocator"
    return {
        "peak_memory_bytes": peak,
        "baseline_bytes": baseline,
        "step_memory_bytes": max(peak - baseline, 0),
        "method": method,
    }


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """`measure_case` in a fresh Python process; raises EpbenchError with its stderr on failure."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    done = subprocess.run(
        [sys.executable, "-m", "epbench.measurements.memory"],
        input=json.dumps(case),
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT,
        env=env,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EpbenchError(
            f"memory case K = {case['config']['dynamics']['K']} {case['algorithm']}: expected a "
            f"result, found exit code {done.returncode}: {tail}"
        )
    return json.loads(lines[-1])


def slope(ks: list[int], values: list[float]) -> float:
    """Least-squares slope of values against K."""
    return float(np.polyfit(np.asarray(ks, dtype=float), np.asarray(values, dtype=float), 1)[0])


def sweep(
    spec: TaskSpec,
    backend_name: str,
    *,
    dtype: str,
    device: str,
    seed: int,
    ks: tuple[int, ...] = SWEEP_K,
    algorithms: tuple[str, ...] = SWEEP_ALGORITHMS,
) -> dict[str, Any]:
    """Every (K, algorithm) case of one cell, each in its own process: `metrics["memory"]`."""
    out: dict[str, Any] = {"K": list(ks), "T": [max(spec.dynamics.T, k) for k in ks]}
    cases = []
    for algorithm in algorithms:
        for k, t in zip(ks, out["T"], strict=True):
            config = dict(spec.config)
            config["dynamics"] = {**config.get("dynamics", {}), "T": t, "K": k}
            cases.append(
                {
                    "config": config,
                    "name": spec.name,
                    "cell": spec.cell,
                    "preset": spec.preset,
                    "variant": [list(v) for v in spec.variant],
                    "backend": backend_name,
                    "algorithm": algorithm,
                    "dtype": dtype,
                    "device": device,
                    "seed": seed,
                }
            )
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(run_case, cases))
    for i, algorithm in enumerate(algorithms):
        rows = results[i * len(ks) : (i + 1) * len(ks)]
        block: dict[str, Any] = {
            key: [r[key] for r in rows]
            for key in ("peak_memory_bytes", "step_memory_bytes", "baseline_bytes")
        }
        peaks = block["peak_memory_bytes"]
        block["slope_bytes_per_k"] = slope(list(ks), block["step_memory_bytes"])
        block["variation"] = (max(peaks) - min(peaks)) / min(peaks) if min(peaks) else None
        block["method"] = rows[0]["method"]
        out[algorithm] = block
    return out


def run(cell: Cell, backend: Backend, inputs: None, output: Output) -> dict[str, Any]:
    """Measure the memory sweep of one cell on one backend: the record's fields. The cases draw
    their own random batch of the cell's shape (`inputs = "none"`: memory does not depend on the
    values). A case that fails in its process fails the cell (its error is the reason)."""
    started = time.perf_counter()
    try:
        memory = sweep(
            cell.spec, backend.name, dtype=cell.dtype, device=cell.device, seed=cell.seed
        )
    except EpbenchError as err:  # a case's process failed: this cell fails, the run goes on
        raise CaseFailed(str(err)) from None
    return {
        "metrics": {"memory": memory},
        "timings": {"seconds": time.perf_counter() - started},
        "peak_memory_bytes": max(max(memory[a]["peak_memory_bytes"]) for a in SWEEP_ALGORITHMS),
    }


class CaseFailed(RuntimeError):
    """A memory case failed in its own process (not an `EpbenchError`: the matrix goes on)."""


def main() -> None:
    """`python -m epbench.measurements.memory`: one case as JSON on stdin → its numbers, one JSON
    line."""
    case = json.loads(sys.stdin.read())
    print(json.dumps(measure_case(case)))


if __name__ == "__main__":
    main()
