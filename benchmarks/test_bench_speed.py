"""The `speed` task as a pytest-benchmark suite: one benchmark per model × backend × algorithm
(`ep` one-sided, `ep_symmetric`, `bptt`), one training step per round at the cell's batch, T and
K (epbench.measurements.speed.step_function), the device synchronised inside the round.
`extra_info` holds
the step's FLOPs (epbench.core.flops) and the samples/s of the median round, so that
`--benchmark-json` output can be read beside `epbench run speed` records.
"""

from __future__ import annotations

import time

import pytest

from epbench.config.builtin_tasks import task_folder
from epbench.config.tasks import resolve
from epbench.core.flops import ALGORITHMS, total_flops, training_ops
from epbench.core.params import init_params
from epbench.core.support import support_reason
from epbench.measurements.inputs import load_batch
from epbench.measurements.speed import step_function
from epbench.plugins.registry import Registry

ROUND_SECONDS = 2.0  # rounds per benchmark: about this much time, between 3 and 50 rounds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    option = metafunc.config.getoption
    models = [m for m in option("--speed-models").split(",") if m]
    wanted = [b for b in option("--speed-backends").split(",") if b]
    cells = resolve(task_folder() / "speed.toml", preset=option("--speed-preset"))
    backends = {
        name: backend
        for name, backend in Registry().get_backends().items()
        if not wanted or name in wanted
    }
    cases, ids = [], []
    for spec in cells:
        model = dict(spec.variant)["model"]
        if models and model not in models:
            continue
        for name, backend in backends.items():
            for algorithm in ALGORITHMS:
                cases.append((spec, backend, algorithm))
                ids.append(f"{model}-{name}-{algorithm}")
    metafunc.parametrize("case", cases, ids=ids)


def test_training_step(benchmark, case, request: pytest.FixtureRequest) -> None:
    spec, backend, algorithm = case
    device = request.config.getoption("--speed-device")
    reason = support_reason(backend, spec.model, dtype=spec.dtype, device=device)
    if reason:
        pytest.skip(reason)
    x, y = load_batch(spec, seed=0, dtype=spec.dtype, data_dir=None)
    net = backend.build(spec.model, dtype=spec.dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=algorithm)
    state = {"params": net.load(init_params(spec.model, seed=0, dtype=spec.dtype))}

    def one() -> None:
        state["params"], _, _ = step(state["params"])
        net.synchronize()

    one()  # compilation
    start = time.perf_counter()
    one()
    seconds = time.perf_counter() - start
    rounds = int(min(50, max(3, ROUND_SECONDS / seconds)))
    benchmark.group = spec.cell
    benchmark.pedantic(one, rounds=rounds, iterations=1, warmup_rounds=1)
    T, K, B = spec.dynamics.T, spec.dynamics.K, spec.data.batch
    flops = total_flops(training_ops(spec.model, batch=B, T=T, K=K, algorithm=algorithm))
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        cell=spec.cell,
        backend=backend.name,
        device=device,
        dtype=spec.dtype,
        algorithm=algorithm,
        batch=B,
        T=T,
        K=K,
        flops=flops,
        samples_per_s=B / median,
        gflops_per_s=flops / median / 1e9,
    )
    assert median > 0
