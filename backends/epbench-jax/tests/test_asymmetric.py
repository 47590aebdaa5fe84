"""The JAX asymmetric network (independent feedback weights B, `epbench_jax.asymmetric`).

At angle 0 every trace and training step must reproduce the tied model (W + Bᵀ for the
tied weight); at an angle the EP traces follow the vector-field rule written out in numpy here.
Networks are built once per module (compilation dominates the run time).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from epbench.core.errors import BackendError
from epbench.core.params import init_params, learning_rates
from epbench.core.spec import ModelSpec
from epbench_jax.asymmetric import FAMILY
from epbench_jax.backend import JaxBackend
from epbench_jax.compiled import JaxNetwork

P = ModelSpec(setting="P", inputs=7, sizes=(4, 6, 5), activation="tanh")
T, K, BATCH, BETA = 60, 8, 3, 0.05


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def tied_sum(traces: dict[str, np.ndarray], name: str) -> np.ndarray:
    """W{n}_{n+1} + B{n+1}_{n}ᵀ of an asymmetric trace (per step), else the trace itself."""
    if name.startswith("W") and not name.endswith("x"):
        n, m = name[1:].split("_")
        return traces[name] + np.swapaxes(traces[f"B{m}_{n}"], -1, -2)
    return traces[name]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, P.inputs))
    return x, np.eye(P.outputs)[rng.integers(0, P.outputs, BATCH)]


@pytest.fixture(scope="module")
def asym():
    """One asymmetric network, reused with parameters drawn at different angles."""
    model = replace(P, feedback_angle=0.0)
    return JaxBackend().build(model, dtype="float64", device="cpu")


def run_all(net, params, x, y) -> dict[str, dict[str, np.ndarray]]:
    p = net.load(params)
    mid, _ = net.free_phase(p, x, steps=T - K)
    star, _ = net.free_phase(p, x, steps=K, start=mid)
    lrs = dict.fromkeys(params, 0.3)
    ep_new, _, _ = net.ep_step(
        net.load(params), x, y, free_steps=T, steps=K, beta=BETA, lrs=lrs, symmetric=True
    )
    bptt_new, _, _ = net.bptt_step(net.load(params), x, y, free_steps=T, steps=K, lrs=lrs)
    return {
        "states": net.states(star),
        "ep": net.ep_trace(p, x, y, start=star, beta=BETA, steps=K, symmetric=True),
        "bptt": net.bptt_trace(p, x, y, start=mid, steps=K),
        "ep_step": {k: v[None] - params[k][None] for k, v in net.dump(ep_new).items()},
        "bptt_step": {k: v[None] - params[k][None] for k, v in net.dump(bptt_new).items()},
    }


def test_angle_zero_reproduces_the_tied_model(asym, data):
    """At B = Wᵀ everything equals the tied network's (the tied weight as W + Bᵀ), 1e-12."""
    x, y = data
    tied_net = JaxBackend().build(P, dtype="float64", device="cpu")
    tied = run_all(tied_net, init_params(P, seed=2), x, y)
    got = run_all(asym, init_params(asym.model, seed=2), x, y)
    for group, values in tied.items():
        for name, want in values.items():
            assert rel(tied_sum(got[group], name), want) < 1e-12, (group, name)


def test_ep_trace_is_the_vector_field_rule(asym, data):
    """At 60° (parameters of the 60° model loaded into the same network structure): each weight's
    trace is the EP change of the layer it feeds times the mean activity it carries, / (Bβ)."""
    x, y = data
    params = init_params(replace(P, feedback_angle=60.0), seed=3)
    p = asym.load(params)
    star, _ = asym.free_phase(p, x, steps=T)
    ep = asym.ep_trace(p, x, y, start=star, beta=BETA, steps=K)
    s = [tuple(asym.states(star)[f"s{n}"] for n in range(3))]
    for _ in range(K):
        a = s[-1]
        s.append(
            (
                np.tanh(a[1] @ params["W0_1"].T + params["b0"]) + BETA * (y - a[0]),
                np.tanh(a[2] @ params["W1_2"].T + a[0] @ params["B1_0"].T + params["b1"]),
                np.tanh(x @ params["W2_x"].T + a[1] @ params["B2_1"].T + params["b2"]),
            )
        )
    want: dict[str, list] = {"W0_1": [], "B1_0": [], "B2_1": [], "W2_x": [], "b1": []}
    for a, b in itertools.pairwise(s):
        want["W0_1"].append((b[0] - a[0]).T @ (a[1] + b[1]) / 2)
        want["B1_0"].append((b[1] - a[1]).T @ (a[0] + b[0]) / 2)
        want["B2_1"].append((b[2] - a[2]).T @ (a[1] + b[1]) / 2)
        want["W2_x"].append((b[2] - a[2]).T @ x)
        want["b1"].append((b[1] - a[1]).sum(0))
    for name, value in want.items():
        assert rel(ep[name], np.stack(value) / (BATCH * BETA)) < 1e-10, name


def test_frozen_feedback_and_refusals(asym, data):
    x, y = data
    params = init_params(replace(P, feedback_angle=30.0), seed=1)
    lrs = learning_rates(asym.model, (0.1, 0.1, 0.1), feedback="frozen")
    for new in (
        asym.ep_step(asym.load(params), x, y, free_steps=T, steps=K, beta=BETA, lrs=lrs)[0],
        asym.bptt_step(asym.load(params), x, y, free_steps=T, steps=K, lrs=lrs)[0],
    ):
        after = asym.dump(new)
        assert np.array_equal(after["B1_0"], params["B1_0"])
        assert not np.array_equal(after["W0_1"], params["W0_1"])
    assert asym.family is FAMILY
    with pytest.raises(BackendError, match="fully connected"):
        JaxNetwork(P, family=FAMILY, dtype="float64", device="cpu", jax_device=None)
    with pytest.raises(BackendError, match=r"expected parameters .*B1_0, B2_1 missing"):
        asym.load(init_params(P, seed=0))  # the tied model's parameters lack B
