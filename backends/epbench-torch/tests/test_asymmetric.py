"""The torch asymmetric network (independent feedback weights B, the `asymmetric` family).

References: the tied model (at angle 0 every trace must reproduce it), a numpy rewrite of
the P dynamics and of the vector-field EP rule, and BPTT with an explicit per-step copy of θ.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from epbench_torch import TorchBackend, TorchNetwork, asymmetric

from epbench.core.errors import BackendError
from epbench.core.params import feedback_angles_deg, init_params, learning_rates, param_shapes
from epbench.core.protocols import RtrlNetwork
from epbench.core.spec import ConvSpec, ModelSpec

P = ModelSpec(setting="P", inputs=7, sizes=(4, 6, 5), activation="tanh")
EB = ModelSpec(setting="EB", inputs=5, sizes=(10, 12), input_to=(0, 1), epsilon=0.2)
T, K, BATCH, BETA = 60, 8, 3, 0.05


def batch(model: ModelSpec, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, model.inputs)), np.eye(model.outputs)[
        rng.integers(0, model.outputs, BATCH)
    ]


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def tied_sum(traces: dict[str, np.ndarray], name: str) -> np.ndarray:
    """W{n}_{n+1} + B{n+1}_{n}ᵀ of an asymmetric trace (per step), else the trace itself."""
    if name.startswith("W") and not name.endswith("x"):
        n, m = name[1:].split("_")
        return traces[name] + np.swapaxes(traces[f"B{m}_{n}"], -1, -2)
    return traces[name]


def run_all(net, params: dict[str, np.ndarray], x, y) -> dict[str, dict[str, np.ndarray]]:
    p = net.load(params)
    mid, _ = net.free_phase(p, x, steps=T - K)
    star, _ = net.free_phase(p, x, steps=K, start=mid)
    lrs = dict.fromkeys(params, 0.3)
    ep_new, _, _ = net.ep_step(net.load(params), x, y, free_steps=T, steps=K, beta=BETA, lrs=lrs)
    bptt_new, _, _ = net.bptt_step(net.load(params), x, y, free_steps=T, steps=K, lrs=lrs)
    dump = net.dump
    return {
        "states": net.states(star),
        "ep": net.ep_trace(p, x, y, start=star, beta=BETA, steps=K, symmetric=True),
        "bptt": net.bptt_trace(p, x, y, start=mid, steps=K),
        "ep_step": {k: v[None] - params[k][None] for k, v in dump(ep_new).items()},
        "bptt_step": {k: v[None] - params[k][None] for k, v in dump(bptt_new).items()},
    }


@pytest.mark.parametrize("model", [P, EB], ids=["P", "EB"])
def test_angle_zero_reproduces_the_tied_model(model):
    """At B = Wᵀ: states, biases, input weights and state traces equal the tied model's, and the
    tied weight's trace and update are W + Bᵀ of the asymmetric one (float64, 1e-12)."""
    backend = TorchBackend()
    asym = replace(model, feedback_angle=0.0)
    x, y = batch(model)
    tied = run_all(
        backend.build(model, dtype="float64", device="cpu"), init_params(model, seed=2), x, y
    )
    got = run_all(
        backend.build(asym, dtype="float64", device="cpu"), init_params(asym, seed=2), x, y
    )
    for group, values in tied.items():
        for name, want in values.items():
            assert rel(tied_sum(got[group], name), want) < 1e-12, (group, name)


def test_traces_match_a_numpy_reference_at_an_angle():
    """P model at 40°: the nudged phase, the vector-field EP rule and the per-step BPTT shares
    (explicit per-step parameter copies) written out independently."""
    model = replace(P, feedback_angle=40.0)
    net = TorchNetwork(model, family=asymmetric.FAMILY, dtype="float64", device="cpu")
    params = init_params(model, seed=5)
    x, y = batch(model, seed=3)
    p = net.load(params)
    mid, _ = net.free_phase(p, x, steps=T - K)
    star, _ = net.free_phase(p, x, steps=K, start=mid)
    ep = net.ep_trace(p, x, y, start=star, beta=BETA, steps=K)
    bptt = net.bptt_trace(p, x, y, start=mid, steps=K)

    def f(q, s, nudge=0.0, lib=np):  # s⁰ ← tanh(W0_1 s¹ + b0) + β(y − s⁰), and so on
        h0 = s[1] @ q["W0_1"].T + q["b0"]
        h1 = s[2] @ q["W1_2"].T + s[0] @ q["B1_0"].T + q["b1"]
        h2 = x @ q["W2_x"].T + s[1] @ q["B2_1"].T + q["b2"]
        return (lib.tanh(h0) + nudge * (y - s[0]), lib.tanh(h1), lib.tanh(h2))

    s = [tuple(net.states(star)[f"s{n}"] for n in range(3))]
    for _ in range(K):
        s.append(f(params, s[-1], BETA))
    for t in range(K):
        a, b = s[t], s[t + 1]
        want = {
            "W0_1": (b[0] - a[0]).T @ (a[1] + b[1]) / 2,
            "B1_0": (b[1] - a[1]).T @ (a[0] + b[0]) / 2,
            "W1_2": (b[1] - a[1]).T @ (a[2] + b[2]) / 2,
            "B2_1": (b[2] - a[2]).T @ (a[1] + b[1]) / 2,
            "W2_x": (b[2] - a[2]).T @ x,
            "b0": (b[0] - a[0]).sum(0),
        }
        for name, value in want.items():
            assert rel(ep[name][t], value / (BATCH * BETA)) < 1e-10, (name, t)

    # BPTT: one copy of θ per step, ∂L/∂θ_k by autograd; trace index t is step K − 1 − t.
    copies = [{k: torch.tensor(v, requires_grad=True) for k, v in params.items()} for _ in range(K)]
    v = tuple(torch.tensor(net.states(mid)[f"s{n}"]) for n in range(3))
    x_t, y_t = torch.tensor(x), torch.tensor(y)
    for q in copies:
        x, y = x_t, y_t
        v = f(q, v, lib=torch)
    loss = 0.5 * ((v[0] - y_t) ** 2).sum() / BATCH
    loss.backward()
    for k, q in enumerate(copies):
        for name, leaf in q.items():
            if leaf.grad is None:  # no path to s⁰_K within the remaining steps
                assert not bptt[name][K - 1 - k].any(), (name, k)
            else:
                assert rel(bptt[name][K - 1 - k], leaf.grad.numpy()) < 1e-10, (name, k)


def test_training_steps_update_and_freeze_the_feedback():
    """ep_step and bptt_step move B; learning rate 0 (train.feedback = "frozen") keeps it."""
    model = replace(P, feedback_angle=30.0)
    net = TorchBackend().build(model, dtype="float64", device="cpu")
    params = init_params(model, seed=1)
    x, y = batch(model)
    for feedback in ("ep", "frozen"):
        lrs = learning_rates(model, (0.1, 0.1, 0.1), feedback=feedback)
        for new in (
            net.ep_step(net.load(params), x, y, free_steps=T, steps=K, beta=BETA, lrs=lrs)[0],
            net.bptt_step(net.load(params), x, y, free_steps=T, steps=K, lrs=lrs)[0],
        ):
            after = net.dump(new)
            moved = {k: not np.array_equal(after[k], params[k]) for k in param_shapes(model)}
            assert moved["W0_1"] and moved["W2_x"]
            assert moved["B1_0"] == moved["B2_1"] == (feedback == "ep")
            assert abs(feedback_angles_deg(after)["B1_0"] - 30.0) > 1e-6  # W moved either way


def test_build_dispatch_and_refusals():
    backend = TorchBackend()
    net = backend.build(replace(P, feedback_angle=10.0), dtype="float32", device="cpu")
    assert isinstance(net, TorchNetwork) and net.family is asymmetric.FAMILY
    assert isinstance(net, RtrlNetwork)
    conv = ModelSpec(
        setting="P",
        inputs=144,
        sizes=(5, 36, 108),
        activation="hardsigm",
        conv=ConvSpec(input=(1, 12, 12), channels=(3, 4), kernel=3, padding=1, pool=2),
        feedback_angle=10.0,
    )
    assert "fully connected" in backend.supports(conv, dtype="float64", device="cpu")
    with pytest.raises(BackendError, match="fully connected"):
        backend.build(conv, dtype="float64", device="cpu")
    with pytest.raises(BackendError, match="fully connected"):
        TorchNetwork(P, family=asymmetric.FAMILY, dtype="float64", device="cpu")
    net = backend.build(replace(P, feedback_angle=10.0), dtype="float64", device="cpu")
    with pytest.raises(BackendError, match=r"expected parameters .*B1_0, B2_1 missing"):
        net.load(init_params(P, seed=0))  # the tied model's parameters lack B
