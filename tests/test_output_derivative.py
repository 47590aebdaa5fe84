"""`model.output_derivative`: the EB output update with or without its factor ρ'(s⁰)
(docs/theory.md §3.2).

The energy's gradient keeps ρ'(s⁰) on the output (the default); the paper's own code drops it.
Checked here: one free step of each against the formula written out in numpy, the nudged step,
that BPTT still differentiates the same step (its gradient against finite differences), that a
backend which does not declare the field skips the cell with a reason, and the one-line error in
the P setting.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from epbench.config.tasks import resolve
from epbench.core.errors import TaskError
from epbench.core.params import init_params
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason
from epbench.plugins.registry import Registry

MODEL = ModelSpec(setting="EB", inputs=6, sizes=(3, 5), activation="sigm", epsilon=0.2, clamp=True)
REFERENCE = replace(MODEL, output_derivative=False)


def sigm(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-4.0 * (v - 0.5)))


def sigm_prime(v: np.ndarray) -> np.ndarray:
    return 4.0 * sigm(v) * (1.0 - sigm(v))


def numpy_step(model: ModelSpec, p: dict, x, s0, s1, y=None, beta=0.0):
    """One EB step written out: h⁰ = W0_1 ρ(s¹) + b0, h¹ = W1_x ρ(x) + W0_1ᵀ ρ(s⁰) + b1."""
    h0 = sigm(s1) @ p["W0_1"].T + p["b0"]
    h1 = sigm(x) @ p["W1_x"].T + sigm(s0) @ p["W0_1"] + p["b1"]
    gain0 = sigm_prime(s0) if model.output_derivative else 1.0
    new0 = s0 + model.epsilon * (-s0 + gain0 * h0)
    if y is not None:
        new0 = new0 + model.epsilon * beta * (y - s0)
    new1 = s1 + model.epsilon * (-s1 + sigm_prime(s1) * h1)
    return np.clip(new0, 0, 1), np.clip(new1, 0, 1)


def backend(name: str):
    backends = Registry().get_backends()
    if name not in backends:
        pytest.skip(f"the {name} backend is not installed")
    return backends[name]


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    x = rng.random((4, 6))
    y = np.eye(3)[[0, 2, 1, 0]]
    params = {k: v * 4 for k, v in init_params(MODEL, seed=1).items()}  # states off the bounds
    return params, x, y


@pytest.mark.parametrize("model", [MODEL, REFERENCE], ids=["energy", "reference-code"])
def test_one_free_step_and_one_nudged_step_are_the_written_out_formula(model, case) -> None:
    params, x, y = case
    net = backend("jax").build(model, dtype="float64", device="cpu")
    p = net.load(params)
    start, _ = net.free_phase(p, x, steps=3)
    s = net.states(start)
    after, _ = net.free_phase(p, x, steps=1, start=start)
    want = numpy_step(model, params, x, s["s0"], s["s1"])
    got = net.states(after)
    np.testing.assert_allclose(got["s0"], want[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["s1"], want[1], rtol=0, atol=1e-12)
    # the nudged phase: the EP trace of one step from the free state, ∂Φ/∂b0 = ρ(s⁰) without
    # the ε of Φ_ε, as a batch mean over β
    trace = net.ep_trace(p, x, y, start=start, beta=0.5, steps=1)
    nudged0, _ = numpy_step(model, params, x, s["s0"], s["s1"], y=y, beta=0.5)
    delta_b0 = (sigm(nudged0) - sigm(s["s0"])).mean(0) / 0.5
    np.testing.assert_allclose(trace["b0"][0], delta_b0, rtol=1e-9, atol=1e-12)


def test_the_two_updates_differ_where_the_output_is_not_at_the_middle(case) -> None:
    params, x, _ = case
    runs = []
    for model in (MODEL, REFERENCE):
        net = backend("jax").build(model, dtype="float64", device="cpu")
        runs.append(net.states(net.free_phase(net.load(params), x, steps=5)[0])["s0"])
    assert np.abs(runs[0] - runs[1]).max() > 1e-3


def test_bptt_differentiates_the_reference_code_step(case) -> None:
    params, x, y = case
    net = backend("jax").build(REFERENCE, dtype="float64", device="cpu")
    lrs = {name: 1.0 for name in params}
    new, _, _ = net.bptt_step(net.load(params), x, y, free_steps=6, steps=6, lrs=lrs)
    grad = params["b0"] - net.dump(new)["b0"]  # θ − lr ∂L/∂θ with lr = 1

    def loss(b0: np.ndarray) -> float:
        s0, s1 = np.zeros((4, 3)), np.zeros((4, 5))
        for _ in range(6):
            s0, s1 = numpy_step(REFERENCE, {**params, "b0": b0}, x, s0, s1)
        return 0.5 * float(((s0 - y) ** 2).sum()) / len(x)

    h = 1e-6
    for k in range(3):
        e = np.eye(3)[k] * h
        fd = (loss(params["b0"] + e) - loss(params["b0"] - e)) / (2 * h)
        assert grad[k] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_a_backend_that_does_not_declare_the_field_skips_with_a_reason() -> None:
    torch = backend("torch")
    assert support_reason(torch, MODEL, dtype="float64", device="cpu") is None
    reason = support_reason(torch, REFERENCE, dtype="float64", device="cpu")
    assert reason is not None and "ModelSpec.output_derivative" in reason
    assert support_reason(backend("jax"), REFERENCE, dtype="float64", device="cpu") is None


def test_the_p_setting_refuses_it_in_one_line(tmp_path: Path) -> None:
    task = tmp_path / "p.toml"
    task.write_text(
        'measure = ["gdu"]\n[model]\nsetting = "P"\ninputs = 6\nsizes = [3, 5]\n'
        'activation = "sigm"\noutput_derivative = false\n'
        '[dynamics]\nT = 4\nK = 2\nbeta = 0.1\n[data]\nsource = "toy"\n'
    )
    with pytest.raises(TaskError) as err:
        resolve(task)
    text = str(err.value)
    assert "model.output_derivative" in text and "P setting" in text and "\n" not in text
