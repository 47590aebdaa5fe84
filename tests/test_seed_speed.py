"""The `seed-speed` measurement: per-seed throughput at S = 1, 2, 5, 10 seeds, and the most any
batching could give, both measured in the same run (epbench.measurements.seed_speed).

One cell (P-1h at the `quick` phases, T = 12, K = 4, batch 20) on the jax backend; the timings are
what they are on the machine, so the test checks how the figures hang together and the FLOP count
against a count by hand, never a speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from epbench.config.tasks import resolve
from epbench.measurements.seed_speed import linear_cost
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.views.seed_speed import format_seed_speed

TASK = Path(__file__).parents[1] / "tasks" / "seed-speed.toml"


def p1h_quick_flops(algorithm: str) -> int:
    """One seed's step of P 784-512-10 at batch 20, T = 12, K = 4, counted by hand: a step of the
    dynamics is two GEMMs with the output weight, the input projection one per phase."""
    B, T, K = 20, 12, 4
    step = 2 * (2 * B * 512 * 10)
    proj = 2 * B * 784 * 512
    if algorithm == "ep":  # free, nudged, then ∂Φ/∂θ at both ends (one product for W1_x)
        return T * step + proj + K * step + proj + 2 * (2 * 10 * B * 512) + 2 * 512 * B * 784
    # BPTT: T − K free steps and K recorded ones, two projections; backward: two adjoints of each
    # recorded product, the projection's weight adjoint once
    return (T - K) * step + proj + K * step + proj + K * 2 * step + proj


@pytest.fixture(scope="module")
def record() -> dict:
    backends = Registry().get_backends()
    if "jax" not in backends:
        pytest.skip("the jax backend is not installed")
    (spec,) = resolve(TASK, selection={"model": "P-1h"}, preset="quick")
    return run_measurement(
        "seed-speed", spec, backends["jax"], options=RunOptions(quiet=True), env={}
    )


@pytest.mark.slow
def test_every_seed_count_is_timed_and_its_gain_is_its_throughput_over_one_seed(
    record: dict,
) -> None:
    assert record["status"] == "ok" and record["batched"] is True
    for algorithm in ("ep", "bptt"):
        block = record["metrics"]["seeds"][algorithm]
        assert {"1", "2", "5", "10"} <= set(block)
        one = block["1"]
        assert one["gain"] == 1.0
        for S in (1, 2, 5, 10):
            case = block[str(S)]
            assert len(case["rounds"]) == 3 and case["step_seconds"] > 0
            assert case["seed_samples_per_s"] == pytest.approx(S * 20 / case["step_seconds"])
            assert case["gain"] == pytest.approx(
                case["seed_samples_per_s"] / one["seed_samples_per_s"]
            )


@pytest.mark.slow
def test_the_gain_limit_comes_from_a_line_through_the_step_seconds(record: dict) -> None:
    machine = record["metrics"]["machine"]
    assert machine["op"] == ["gemm", 2048, 2048, 2048] and machine["flops_per_s"] > 0
    assert machine["source"] in ("jax", "numpy")
    for algorithm in ("ep", "bptt"):
        block = record["metrics"]["seeds"][algorithm]
        assert block["flops_per_step"] == p1h_quick_flops(algorithm)
        seconds = {S: block[str(S)]["step_seconds"] for S in (1, 2, 5, 10)}
        for S in seconds:
            assert block[str(S)]["flops_per_s"] == pytest.approx(
                S * block["flops_per_step"] / seconds[S]
            )
        # the least-squares line, by the normal equations
        n, sx = len(seconds), sum(seconds)
        sy, sxx = sum(seconds.values()), sum(S * S for S in seconds)
        sxy = sum(S * t for S, t in seconds.items())
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
        assert block["seconds_per_seed"] == pytest.approx(slope)
        assert block["fixed_seconds"] == pytest.approx((sy - slope * sx) / n)
        if slope > 0 and block["fixed_seconds"] > 0:
            assert block["gain_limit"] == pytest.approx((block["fixed_seconds"] + slope) / slope)
        else:
            assert block["gain_limit"] is None
    text = format_seed_speed(record)
    assert "gain limit" in text and "S=10 gain" in text


def test_a_cost_that_does_not_grow_with_seeds_has_no_gain_limit() -> None:
    assert linear_cost({1: 2.0}) == {
        "fixed_seconds": None, "seconds_per_seed": None, "gain_limit": None
    }  # fmt: skip
    flat = linear_cost({1: 1.0, 2: 1.0, 5: 1.0})
    assert flat["gain_limit"] is None and flat["fixed_seconds"] == pytest.approx(1.0)
    line = linear_cost({1: 3.0, 2: 5.0, 5: 11.0})  # 1 s fixed, 2 s per seed
    assert line["gain_limit"] == pytest.approx(1.5)
    steeper = linear_cost({1: 1.0, 2: 3.0, 5: 9.0})  # −1 s "fixed": the cost per seed grows
    assert steeper["fixed_seconds"] == pytest.approx(-1.0) and steeper["gain_limit"] is None
