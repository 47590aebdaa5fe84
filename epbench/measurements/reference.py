"""Same-run speed ratios against the paper's reference implementation, re-created by a backend.

The paper's public implementation (PyTorch, 2019) is the yardstick for the P-conv throughput
targets: 1.5× its samples/s. A 2-core machine shared with other work drifts by tens of percent
between runs, so an absolute samples/s taken on one day is not comparable with one taken on
another; a ratio measured in the same run, steps interleaved, is.

A backend offers the yardstick through the optional capability `ReferenceBackend`
(epbench.core.protocols): `reference_network(model, *, dtype, device)` gives the model computed
the way the paper's implementation computes it (`load`, one-sided `ep_step`, `bptt_step`,
`synchronize`: a `ReferenceNetwork`), or None when the backend has no re-creation for `model`.

The torch backend re-creates it for the paper's P-conv (epbench_torch/reference_conv.py), and its
tests check that it computes the same updates as the backend's own network.

`time_against_reference` builds both networks from the same parameters, runs one warm-up step of
each, then `pairs` rounds of one step of each in alternating order, and reports per algorithm
(`ep`, `bptt`): the reference's samples/s (median), the backend's in the same rounds (median) and
the speed-up: the median of the per-round ratios (a slow moment of the machine hits both halves of
a round alike).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from epbench.core.protocols import Backend, ReferenceBackend
from epbench.core.spec import TaskSpec

ALGORITHMS = ("ep", "bptt")
PAIRS = 5  # rounds per algorithm (each round: one step of each network)


def reference_of(backend: Backend, spec: TaskSpec, *, dtype: str, device: str) -> Any | None:
    """The backend's re-creation of the reference implementation for the cell's model, or None."""
    if not isinstance(backend, ReferenceBackend):
        return None
    return backend.reference_network(spec.model, dtype=dtype, device=device)


def _seconds(net: Any, step: Callable[[Any], tuple], params: Any) -> tuple[Any, float]:
    net.synchronize()
    start = time.perf_counter()
    params, _, _ = step(params)
    net.synchronize()
    return params, time.perf_counter() - start


def time_against_reference(
    backend: Backend,
    reference: Any,
    spec: TaskSpec,
    params_np: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    step_function: Callable[..., Callable[[Any], tuple]],
    dtype: str,
    device: str,
    pairs: int = PAIRS,
) -> dict[str, Any]:
    """`{algorithm: {reference_samples_per_s, samples_per_s, speedup, speedups, pairs}}` for
    `ep` and `bptt` at the cell's T, K, β and learning rates; `step_function(net, spec, x, y,
    algorithm=...)` is epbench.measurements.speed's, so both networks run exactly the same call."""
    batch = spec.data.batch
    out: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        ours = backend.build(spec.model, dtype=dtype, device=device)
        nets = {"ours": ours, "reference": reference}
        steps = {k: step_function(n, spec, x, y, algorithm=algorithm) for k, n in nets.items()}
        params = {k: n.load(params_np) for k, n in nets.items()}
        for key in nets:  # warm-up: first-call costs stay out of the ratio
            params[key], _ = _seconds(nets[key], steps[key], params[key])
        seconds: dict[str, list[float]] = {"ours": [], "reference": []}
        for round_ in range(pairs):
            order = ("ours", "reference") if round_ % 2 == 0 else ("reference", "ours")
            for key in order:
                params[key], spent = _seconds(nets[key], steps[key], params[key])
                seconds[key].append(spent)
        speedups = [r / o for o, r in zip(seconds["ours"], seconds["reference"], strict=True)]
        out[algorithm] = {
            "reference_samples_per_s": batch / statistics.median(seconds["reference"]),
            "samples_per_s": batch / statistics.median(seconds["ours"]),
            "speedup": statistics.median(speedups),
            "speedups": speedups,
            "pairs": pairs,
        }
    return out
