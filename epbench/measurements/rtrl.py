"""The `rtrl` measurement: RTRL as a third way to the truncated gradient (docs/theory.md §6.3).

On one mini-batch at the seed's initial weights, from the same states, three computations of the
learning signal of the last K steps:

    rtrl   Network.rtrl_gradient from s_{T−K}: Σ_t ∇BPTT_θ(t) forward in time (sensitivities
           ∂s_k/∂θ carried along, forward-mode differentiation; memory O(P · state), not O(K))
    bptt   Network.bptt_trace from s_{T−K}: one backward pass through the K steps (O(K) memory)
    ep     Network.ep_trace from s_* (T free steps): K nudged steps (O(1) memory in K, plus the
           K-long traces it returns)

Each is run once as warm-up (compilation; `first_seconds`), then `max(1, repeat)` times timed with
the device synchronised (`steady_seconds`, the best), then once more for memory: on the CPU the
process's resident set, freed heap handed back to the OS and the peak (VmHWM) reset before the
call, `memory_bytes` = peak − resident set before; on a GPU the backend's optional `memory_stats`
(peak − current, reset before the call where the allocator allows it). BPTT's and EP's numbers
include the K-step trace arrays they return, RTRL's only its total gradient.

The record's `metrics.rtrl` holds the relative difference ‖rtrl − Σ_t bptt‖ / ‖Σ_t bptt‖ per
parameter and its maximum (status `failed` above `TOLERANCE`), P (`params`), the state size
(`states` = B · Σ sizes) and P · states (`tangents`, the sensitivity entries RTRL carries). A cell
whose `tangents` exceed `MAX_TANGENTS`, or a network without `rtrl_gradient`, is `skipped`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from epbench.core.estimators import nudge_keywords
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.process_memory import peak_memory_bytes, reset_peak_memory, rss_bytes, trim
from epbench.core.protocols import Backend, MemoryStatsBackend, RtrlNetwork

METHODS = ("rtrl", "bptt", "ep")
TOLERANCE = {"float64": 1e-8, "float32": 1e-3}  # RTRL against Σ_t ∇BPTT (relative)
MAX_TANGENTS = 1 << 27  # P · B · Σ sizes: 1 GiB of float64 sensitivities


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """‖got − want‖_F / ‖want‖_F (the absolute difference when `want` is 0)."""
    want = np.asarray(want, dtype=np.float64)
    diff = float(np.linalg.norm(np.asarray(got, dtype=np.float64) - want))
    scale = float(np.linalg.norm(want))
    return diff / scale if scale > 0 else diff


def measure(
    call: Callable[[], Any],
    *,
    sync: Callable[[], None],
    repeat: int,
    memory: Callable[[], int] | None = None,
) -> tuple[Any, dict[str, float | int | None]]:
    """Run `call` for warm-up, `repeat` timed runs and one memory run (module doc); returns the
    warm-up's output and {"first_seconds", "steady_seconds", "memory_bytes"}."""
    sync()
    start = time.perf_counter()
    out = call()
    sync()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(max(1, repeat)):
        sync()
        start = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - start)
    if memory is None:
        trim()
        reset_peak_memory()
        before = rss_bytes()
        call()
        sync()
        used = max(0, peak_memory_bytes() - before) if before else None
    else:
        used = memory()
    return out, {"first_seconds": first, "steady_seconds": best, "memory_bytes": used}


def _device_memory(backend: Backend, device: str, call: Callable[[], Any], sync) -> int | None:
    """Peak − current device memory of one `call`, from the backend's optional `memory_stats`."""
    if not isinstance(backend, MemoryStatsBackend):
        return None
    stats = backend.memory_stats
    before = stats(device, reset=True)
    call()
    sync()
    after = stats(device)
    if before is None or after is None:
        return None
    return max(0, int(after["peak_bytes"]) - int(before["current_bytes"]))


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one `rtrl` cell on one backend (module doc): the record's fields. A skip when the
    backend's network has no RTRL (`RtrlNetwork`, optional) or the sensitivities would not fit."""
    spec, dtype, device = cell.spec, cell.dtype, cell.device
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    params_np = init_params(spec.model, seed=cell.seed, dtype=dtype)
    count = int(sum(v.size for v in params_np.values()))
    states = int(x.shape[0] * sum(spec.model.sizes))
    sizes = {"params": count, "states": states, "tangents": count * states}
    if count * states > MAX_TANGENTS:
        return {
            "metrics": {"rtrl": sizes},
            "status": "skipped",
            "reason": f"RTRL would carry P·states = {count * states:,} sensitivities "
            f"(limit {MAX_TANGENTS:,}): use a smaller model or batch",
        }
    T, K = spec.dynamics.T, spec.dynamics.K
    nudge = nudge_keywords(spec.dynamics, seed=cell.seed)  # β, symmetric, holomorphic points
    net = backend.build(spec.model, dtype=dtype, device=device)
    if not isinstance(net, RtrlNetwork):
        return {
            "status": "skipped",
            "reason": f"{backend.name}: this network has no rtrl_gradient (optional RtrlNetwork)",
        }
    params = net.load(params_np)
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, residual = net.free_phase(params, x, steps=K, start=mid)
    calls = {
        "rtrl": lambda: net.rtrl_gradient(params, x, y, start=mid, steps=K),
        "bptt": lambda: net.bptt_trace(params, x, y, start=mid, steps=K),
        "ep": lambda: net.ep_trace(params, x, y, start=star, steps=K, **nudge),
    }
    gpu = device != "cpu" and isinstance(backend, MemoryStatsBackend)
    outputs, timings = {}, {}
    for method in METHODS:
        call = calls[method]
        memory = (
            (lambda c=call: _device_memory(backend, device, c, net.synchronize)) if gpu else None
        )
        outputs[method], timings[method] = measure(
            call, sync=net.synchronize, repeat=cell.repeat, memory=memory
        )
    total = {name: outputs["bptt"][name].sum(axis=0) for name in params_np}
    diffs = {name: relative_difference(outputs["rtrl"][name], total[name]) for name in params_np}
    worst = max(diffs.values())
    part: dict[str, Any] = {
        "timings": {
            "first_seconds": sum(t["first_seconds"] for t in timings.values()),
            "steady_seconds": timings["rtrl"]["steady_seconds"],
            "methods": timings,
            "repeats": max(1, cell.repeat),
        },
        "peak_memory_bytes": peak_memory_bytes(),
        "metrics": {
            "residual": float(residual),
            "rtrl": {**sizes, "max_rel_diff": worst, "rel_diff": diffs},
        },
    }
    limit = TOLERANCE.get(dtype, 1e-3)
    if not math.isfinite(worst) or worst > limit:
        return {
            **part,
            "status": "failed",
            "reason": f"RTRL differs from Σ_t ∇BPTT by {worst:.2e} (> {limit:.0e})",
        }
    return part
