"""Holomorphic EP (docs/theory.md §2.5) on every installed backend, float64.

- the phases of N points reproduce the full N-point Fourier coefficient (conjugate symmetry);
- N = 2 equals the symmetric estimator to 1e-12 relative (toy, EB-1h, P-1h traces);
- the theorem for N points: at the fixed point (toy and EB-1h, tanh) the log-log slope of the
  relative error against BPTT over a β grid is N ± 0.3 for N = 2, 3, 4, and at |β| = 0.1 the error
  falls with N until it reaches the float64 floor;
- the training step is the sum of the holomorphic traces; torch and jax agree to 1e-10;
- bad point counts, non-holomorphic models and a nudge beyond sigm's holomorphic strip are
  one-line errors or skips.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from epbench.cli import main
from epbench.config.tasks import resolve
from epbench.core.errors import BackendError
from epbench.core.estimators import holomorphic_phases, nudge_keywords, points_of
from epbench.core.flops import ALGORITHMS
from epbench.core.params import init_params
from epbench.core.spec import DynamicsSpec, ModelSpec
from epbench.core.support import estimator_reason
from epbench.measurements.beta_sweep import fit_slope, sweep_error
from epbench.measurements.inputs import load_batch
from epbench.measurements.speed import algorithms_of
from epbench.plugins.registry import Registry
from epbench.views.speed_tables import speed_rows

CELLS = {
    "toy": ("toy", {}),
    "EB-1h": ("mnist-fc", {"model": "EB-1h"}),
    "P-1h": ("mnist-fc", {"model": "P-1h"}),
}
FLOOR = (
    1e-12  # float64: the round-off of (s^β_{t+1} − s^β_t) / β at |β| = 0.1 (~1e-14), with margin
)


def setup(backend_name: str, cell: str, request: pytest.FixtureRequest, *, free: int = 0):
    """(spec, net, params, x, y, mid, star, residual) of a cell, float64, quick preset, the first
    4 examples; `free` > T: that many free steps (to reach the fixed point)."""
    task, selection = CELLS[cell]
    if task == "mnist-fc":
        request.getfixturevalue("mnist_available")
    registry = Registry()
    spec = resolve(registry.get_task_path(task), selection=selection, preset="quick")[0]
    x, y = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    x, y = x[:4], y[:4]
    net = registry.get_backend(backend_name).build(spec.model, dtype="float64", device="cpu")
    params = net.load(init_params(spec.model, seed=0, dtype="float64"))
    T, K = max(spec.dynamics.T, free), spec.dynamics.K
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, residual = net.free_phase(params, x, steps=K, start=mid)
    return spec, net, params, x, y, mid, star, residual


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖a‖ (`metrics.relative_error` compares EP with −BPTT instead)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(difference(a[k], b[k]) for k in a)


def test_phases_are_the_full_fourier_coefficient() -> None:
    """Re Σ_k w_k f(β_k)/β_k over the ⌊N/2⌋ + 1 phases = (1/N) Σ_{k<N} f(β_k)/β_k for an f with
    real Taylor coefficients, and its error against f'(0) is O(|β|^N)."""
    f = np.expm1  # f'(0) = 1, f(conj z) = conj f(z)
    for points in (2, 3, 4, 5, 8):
        phases = holomorphic_phases(0.3, points)
        assert len(phases) == points // 2 + 1
        half = sum(w * f(complex(b)) / b for b, w in phases).real
        full = np.mean(
            [
                f(0.3 * np.exp(2j * np.pi * k / points)) / (0.3 * np.exp(2j * np.pi * k / points))
                for k in range(points)
            ]
        )
        assert abs(half - full.real) < 1e-15 and abs(full.imag) < 1e-15
        assert abs(half - 1.0) == pytest.approx(
            0.3**points / np.prod(range(1, points + 2)), rel=0.2
        )


def test_estimator_keywords_and_reasons() -> None:
    holo = DynamicsSpec(T=10, K=2, beta=-0.1, estimator="holomorphic", points=3)
    assert points_of(holo) == 3 and points_of(DynamicsSpec(T=10, K=2, beta=0.1)) == 0
    assert nudge_keywords(holo, seed=0) == {"beta": 0.1, "symmetric": False, "points": 3}
    fc = dict(setting="P", inputs=4, sizes=(3, 5))
    assert estimator_reason(ModelSpec(**fc, activation="sigm"), holo) is None
    hard = estimator_reason(ModelSpec(**fc, activation="hardsigm"), holo)
    assert "holomorphic activation" in hard and "hardsigm" in hard
    clamped = estimator_reason(ModelSpec(**fc, activation="sigm", clamp=True), holo)
    assert "clamp" in clamped
    assert (
        estimator_reason(ModelSpec(**fc, activation="hardsigm"), DynamicsSpec(T=1, K=1, beta=1.0))
        is None
    )


@pytest.mark.parametrize("cell", list(CELLS))
def test_two_points_are_the_symmetric_estimator(backend_name, cell, request) -> None:
    spec, net, params, x, y, _, star, _ = setup(backend_name, cell, request)
    K, beta = spec.dynamics.K, 0.05
    sym = net.ep_trace(params, x, y, start=star, beta=beta, steps=K, symmetric=True)
    holo = net.ep_trace(params, x, y, start=star, beta=beta, steps=K, points=2)
    assert worst(sym, holo) <= 1e-12


def gdu_error(backend_name: str, cell: str, request: pytest.FixtureRequest):
    """error(|β|, N): the beta-sweep error of holomorphic EP against BPTT at the fixed point."""
    spec, net, params, x, y, mid, star, residual = setup(backend_name, cell, request, free=6000)
    assert residual <= 1e-12, f"first phase not at its fixed point: residual {residual:.2e}"
    K = spec.dynamics.K
    bptt = net.bptt_trace(params, x, y, start=mid, steps=K)

    def error(beta: float, points: int) -> float:
        ep = net.ep_trace(params, x, y, start=star, beta=beta, steps=K, points=points)
        return sweep_error(bptt, ep)

    return error


@pytest.mark.parametrize("cell", ["toy", "EB-1h"])
def test_theorem_for_n_points(backend_name, cell, request) -> None:
    """Slope N ± 0.3 of the error against BPTT over a β grid, where the bias O(|β|^N)
    dominates the round-off."""
    error = gdu_error(backend_name, cell, request)
    betas = [0.025, 0.05, 0.1, 0.2]
    for points in (2, 3, 4):
        slope = fit_slope(betas, [error(b, points) for b in betas])
        assert abs(slope - points) <= 0.3, (points, slope)


def test_error_falls_with_n_to_the_floor(backend_name, request) -> None:
    """At |β| = 0.1 (toy model) the error halves at least from one N to the next until it is
    below the float64 floor, which N = 24 reaches."""
    error = gdu_error(backend_name, "toy", request)
    counts = (2, 3, 4, 6, 8, 12, 16, 24)
    errors = [error(0.1, points) for points in counts]
    for (n, e), (m, nxt) in itertools.pairwise(zip(counts, errors, strict=True)):
        assert nxt < e / 2 or e < FLOOR, f"N = {n}: error {e:.2e}, N = {m}: {nxt:.2e}"
    assert errors[-1] < FLOOR, errors


def test_step_is_the_sum_of_the_traces(backend_name, request) -> None:
    """P-1h (sigm, the training setting): the holomorphic EP step applies Σ_t of its traces."""
    spec, net, _, x, y, _, _, _ = setup(backend_name, "P-1h", request)
    T, K = spec.dynamics.T, spec.dynamics.K
    p0 = init_params(spec.model, seed=0, dtype="float64")
    lrs = dict.fromkeys(p0, 1.0)
    params = net.load(p0)
    star, _ = net.free_phase(params, x, steps=T)
    traces = net.ep_trace(params, x, y, start=star, beta=0.1, steps=K, points=4)
    new = net.dump(
        net.ep_step(net.load(p0), x, y, free_steps=T, steps=K, beta=0.1, lrs=lrs, points=4)[0]
    )
    for name in p0:
        assert difference(traces[name].sum(0), new[name] - p0[name]) <= 1e-10, name


def test_torch_and_jax_agree(request) -> None:
    """Holomorphic traces (N = 3, 4) and one training step, float64: ≤ 1e-10 relative."""
    names = set(Registry().get_backends())
    if not {"torch", "jax"} <= names:
        pytest.skip("needs both the torch and the jax backend")
    results = {}
    for backend in ("torch", "jax"):
        spec, net, params, x, y, _, star, _ = setup(backend, "toy", request)
        T, K = spec.dynamics.T, spec.dynamics.K
        p0 = init_params(spec.model, seed=0, dtype="float64")
        out = {
            N: net.ep_trace(params, x, y, start=star, beta=0.1, steps=K, points=N) for N in (3, 4)
        }
        step = net.ep_step(
            net.load(p0),
            x,
            y,
            free_steps=T,
            steps=K,
            beta=0.1,
            lrs=dict.fromkeys(p0, 0.5),
            points=4,
        )
        out["step"] = net.dump(step[0])
        results[backend] = out
    for key in (3, 4, "step"):
        assert worst(results["torch"][key], results["jax"][key]) <= 1e-10, key


@pytest.mark.parametrize("points", [1, -2, 2.5, True, "4"])
def test_bad_points_are_one_line_errors(backend_name, points) -> None:
    model = ModelSpec(setting="EB", inputs=3, sizes=(2, 4), activation="tanh", epsilon=0.5)
    net = Registry().get_backend(backend_name).build(model, dtype="float64", device="cpu")
    params = net.load(init_params(model, seed=0, dtype="float64"))
    x, y = np.full((1, 3), 0.5), np.eye(2)[:1]
    with pytest.raises(BackendError, match="expected holomorphic points N ≥ 2") as err:
        net.ep_trace(params, x, y, start=None, beta=0.1, steps=2, points=points)
    assert "\n" not in str(err.value)


def test_non_holomorphic_activation_is_refused(backend_name) -> None:
    model = ModelSpec(setting="P", inputs=3, sizes=(2, 4), activation="hardsigm")
    net = Registry().get_backend(backend_name).build(model, dtype="float64", device="cpu")
    params = net.load(init_params(model, seed=0, dtype="float64"))
    with pytest.raises(BackendError, match="holomorphic activation"):
        net.ep_trace(
            params, np.full((1, 3), 0.5), np.eye(2)[:1], start=None, beta=0.1, steps=2, points=4
        )


def test_nudge_beyond_the_holomorphic_strip(backend_name) -> None:
    """sigm has poles at Im = ±π/4: a nudge of |β| = 20 on the EB toy-sized model is refused
    (one line, naming the strip); |β| = 0.01 runs."""
    model = ModelSpec(setting="EB", inputs=3, sizes=(2, 6), activation="sigm", epsilon=0.5)
    net = Registry().get_backend(backend_name).build(model, dtype="float64", device="cpu")
    params = net.load(init_params(model, seed=0, dtype="float64"))
    x, y = np.full((2, 3), 0.5), np.eye(2)
    star, _ = net.free_phase(params, x, steps=200)
    net.ep_trace(params, x, y, start=star, beta=0.01, steps=20, points=4)
    with pytest.raises(BackendError, match="holomorphic strip") as err:
        net.ep_trace(params, x, y, start=star, beta=20.0, steps=20, points=4)
    assert "\n" not in str(err.value) and "smaller |β|" in str(err.value)


def test_gdu_cell_of_a_hardsigm_model_is_a_skip(tmp_path: Path) -> None:
    """`--set dynamics.estimator=holomorphic` on a hardsigm model: the record is skipped with the
    reason; on the toy model it runs with the point count of `dynamics.points`."""
    base = ["run", "toy", "--backend", "torch", "--executor", "inline", "--set", "dynamics.T=200"]
    base += ["--set", "dynamics.K=10", "--set", "dynamics.estimator=holomorphic"]
    assert main([*base, "--set", "model.activation=hardsigm", "--out", str(tmp_path / "a")]) == 0
    record = json.loads(next((tmp_path / "a").rglob("*.jsonl")).read_text().splitlines()[0])
    assert record["status"] == "skipped" and "holomorphic activation" in record["reason"]
    assert main([*base, "--set", "dynamics.points=3", "--out", str(tmp_path / "b")]) == 0
    record = json.loads(next((tmp_path / "b").rglob("*.jsonl")).read_text().splitlines()[0])
    assert record["status"] == "ok" and record["estimator"] == "holomorphic"
    assert record["config"]["dynamics"]["points"] == 3


def test_speed_adds_the_holomorphic_step_where_the_model_allows_it() -> None:
    """`ep_holomorphic` joins the speed algorithms for the holomorphic estimator on a tanh/sigm
    model; on a hardsigm model it stays out and the table shows the skip with its reason."""
    registry = Registry()
    path = registry.get_task_path("speed")
    holo = ["dynamics.estimator=holomorphic"]
    (p1h,) = resolve(path, selection={"model": "P-1h"}, preset="quick", overrides=holo)
    (plain,) = resolve(path, selection={"model": "P-1h"}, preset="quick")
    (conv,) = resolve(path, selection={"model": "P-conv"}, preset="quick", overrides=holo)
    assert algorithms_of(p1h) == (*ALGORITHMS, "ep_holomorphic")
    assert algorithms_of(plain) == ALGORITHMS and algorithms_of(conv) == ALGORITHMS
    reason = estimator_reason(conv.model, conv.dynamics)
    record = {
        "schema": 2, "status": "ok", "measurement": "speed", "cell": "speed[model=P-conv]",
        "backend": "torch", "device": "cpu", "dtype": "float32", "config_hash": "abc",
        "config": {"dynamics": {"estimator": "holomorphic", "points": 4}},
        "metrics": {"speed": {
            "ep": {"step_seconds": 0.01, "samples_per_s": 2000.0, "flops": 1e6,
                   "achieved_flops_per_s": 1e8},
            "ep_holomorphic": {"skipped": reason},
        }},
    }  # fmt: skip
    rows = speed_rows([record])
    assert rows[-1][4] == "EP holo. N=4" and rows[-1][-1] == f"skipped: {reason}"
    assert "hardsigm" in reason
