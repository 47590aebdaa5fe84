"""Asymmetric feedback (docs/theory.md §6.5, §7): independent feedback weights B{n+1}_{n} at an
angle α to
W{n}_{n+1}ᵀ. Core parts (initialisation, learning rates, task files, the per-epoch angle of the
training hook), torch ↔ jax parity, and the GDU cosine against α on the `asymmetric` task."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from epbench.config.tasks import build_spec, resolve
from epbench.core.checkpoint import load_checkpoint
from epbench.core.errors import TaskError, UnknownNameError
from epbench.core.metrics import cosine
from epbench.core.params import (
    feedback_angles_deg,
    feedback_names,
    feedback_partner,
    init_params,
    layer_of,
    learning_rates,
    param_shapes,
)
from epbench.core.spec import ModelSpec
from epbench.measurements.inputs import load_batch
from epbench.measurements.training import TrainingData, train_algorithm
from epbench.plugins.registry import Registry

P2 = ModelSpec(setting="P", inputs=7, sizes=(4, 6, 5), activation="sigm")


@pytest.mark.parametrize("angle", [0.0, 15.0, 45.0, 90.0, 135.0])
def test_feedback_weights_start_at_the_angle(angle: float) -> None:
    """B = cos α Wᵀ + sin α R: angle α, ‖B‖ = ‖W‖, R ⟂ Wᵀ; W and b are the tied model's."""
    model = replace(P2, feedback_angle=angle)
    params = init_params(model, seed=3, dtype="float64")
    tied = init_params(P2, seed=3, dtype="float64")
    assert list(params) == list(param_shapes(model))
    assert feedback_names(model) == ["B1_0", "B2_1"]
    assert {k: v.shape for k, v in params.items() if k.startswith("B")} == {
        "B1_0": (6, 4),
        "B2_1": (5, 6),
    }
    for name, value in tied.items():
        np.testing.assert_array_equal(params[name], value)
    for name, got in feedback_angles_deg(params).items():
        assert abs(got - angle) < 1e-9, name
        w = params[feedback_partner(name)].T
        b = params[name]
        assert abs(np.linalg.norm(b) - np.linalg.norm(w)) < 1e-12
        rest = b - math.cos(math.radians(angle)) * w
        assert abs(np.vdot(rest, w)) < 1e-12 * np.vdot(w, w)
    if angle == 0.0:
        np.testing.assert_array_equal(params["B1_0"], params["W0_1"].T)
    again = init_params(model, seed=3, dtype="float64")
    assert all(np.array_equal(again[k], v) for k, v in params.items())
    other = init_params(model, seed=4, dtype="float64")
    assert angle == 0.0 or not np.array_equal(other["B1_0"], params["B1_0"])


def test_names_layers_and_learning_rates() -> None:
    model = replace(P2, feedback_angle=30.0)
    assert feedback_partner("B2_1") == "W1_2" and layer_of("B2_1") == 2
    assert feedback_names(P2) == [] and feedback_angles_deg(init_params(P2, seed=0)) == {}
    lrs = learning_rates(model, (0.1, 0.2, 0.3))
    assert (lrs["B1_0"], lrs["B2_1"], lrs["W1_2"]) == (0.2, 0.3, 0.2)
    frozen = learning_rates(model, (0.1, 0.2, 0.3), feedback="frozen")
    assert frozen["B1_0"] == frozen["B2_1"] == 0.0 and frozen["W1_2"] == 0.2
    with pytest.raises(TaskError):
        feedback_partner("W0_1")


def test_asymmetric_task_and_validation(tmp_path: Path) -> None:
    path = Registry().get_task_path("asymmetric")
    cells = resolve(path, preset="quick")
    assert [c.cell for c in cells] == [f"asymmetric[angle={a}]" for a in (0, 15, 30, 45, 60, 90)]
    assert [c.model.feedback_angle for c in cells] == [0.0, 15.0, 30.0, 45.0, 60.0, 90.0]
    assert cells[0].model.sizes == (10, 128) and cells[0].measure == ("gdu", "train")
    paper = resolve(path, selection={"angle": "45"})[0]
    assert (paper.model.sizes, paper.dynamics.T, paper.dynamics.K) == ((10, 512), 40, 15)
    frozen = resolve(path, selection={"angle": "30"}, overrides=["train.feedback=frozen"])[0]
    assert frozen.train.feedback == "frozen"
    for override, message in (
        ("model.feedback_angle=200", "between 0 and 180"),
        ("model.feedback_angle=true", "between 0 and 180"),
        ("train.feedback=transposed", "one of ep, frozen"),
    ):
        with pytest.raises(TaskError, match=message):
            resolve(path, selection={"angle": "0"}, overrides=[override])
    tied = Registry().get_task_path("toy")
    with pytest.raises(TaskError, match=r"needs model\.feedback_angle"):
        resolve(tied, overrides=["train.feedback=frozen"])
    conv = Registry().get_task_path("mnist-conv")
    with pytest.raises(TaskError, match="fully connected only"):
        resolve(conv, overrides=["model.feedback_angle=10"])
    with pytest.raises(UnknownNameError):
        resolve(path, selection={"angle": "20"})


def backends():
    found = Registry().get_backends()
    if not {"torch", "jax"} <= set(found):
        pytest.skip("needs the torch and jax backends")
    return found["torch"], found["jax"]


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_torch_and_jax_agree_on_the_asymmetric_model(dtype: str) -> None:
    """Same canonical parameters and batch → same states, traces and training steps (1e-10 in
    float64, 1e-4 in float32 with β = 1, as tests/test_parity.py)."""
    model = replace(P2, feedback_angle=45.0)
    beta, tol = (0.05, 1e-10) if dtype == "float64" else (1.0, 1e-4)
    rng = np.random.default_rng(1)
    x = rng.random((5, model.inputs)).astype(dtype)
    y = np.eye(model.outputs, dtype=dtype)[rng.integers(0, model.outputs, 5)]
    params = init_params(model, seed=0, dtype=dtype)
    lrs = {name: 0.05 * (i + 1) for i, name in enumerate(params)}
    outs = []
    for backend in backends():
        net = backend.build(model, dtype=dtype, device="cpu")
        p = net.load(params)
        mid, _ = net.free_phase(p, x, steps=52)
        star, _ = net.free_phase(p, x, steps=8, start=mid)
        out = {f"free {k}": v for k, v in net.states(star).items()}
        ep = net.ep_trace(p, x, y, start=star, beta=beta, steps=8, symmetric=True)
        out |= {f"ep {k}": v for k, v in ep.items()}
        out |= {f"bptt {k}": v for k, v in net.bptt_trace(p, x, y, start=mid, steps=8).items()}
        new, _, _ = net.ep_step(net.load(params), x, y, free_steps=60, steps=8, beta=beta, lrs=lrs)
        out |= {f"ep_step {k}": v for k, v in net.dump(new).items()}
        new, _, _ = net.bptt_step(net.load(params), x, y, free_steps=60, steps=8, lrs=lrs)
        out |= {f"bptt_step {k}": v for k, v in net.dump(new).items()}
        outs.append(out)
    for key, want in outs[0].items():
        want, got = np.asarray(want, np.float64), np.asarray(outs[1][key], np.float64)
        assert np.linalg.norm(got - want) <= tol * max(np.linalg.norm(want), 1e-30), key


def total_cosine(bptt: dict[str, np.ndarray], ep: dict[str, np.ndarray]) -> float:
    """Cosine between the total EP update −Σ_t ΔEP and the total truncated-BPTT gradient
    Σ_t ∇BPTT, over all parameters at once (docs/theory.md §4, the reviewer's cosine)."""
    names = [k for k in bptt if not k.startswith("s")]
    a = np.concatenate([bptt[k].sum(0).ravel() for k in names])
    b = np.concatenate([-ep[k].sum(0).ravel() for k in names])
    return cosine(a, b)


def test_gdu_cosine_falls_with_the_angle(mnist_available: None) -> None:
    """`asymmetric` quick preset (P-1h-128, sigm, T = 40, K = 15, β = 0.1, first MNIST batch of
    20), torch, float64: the cosine between EP's total update and BPTT's total gradient over all
    parameters falls as B turns away from Wᵀ: cos(0°) > cos(45°) > cos(90°)."""
    torch = Registry().get_backends().get("torch")
    if torch is None:
        pytest.skip("needs the torch backend")
    path = Registry().get_task_path("asymmetric")
    found = {}
    for angle in ("0", "45", "90"):
        (spec,) = resolve(path, preset="quick", selection={"angle": angle})
        x, y = load_batch(spec, seed=0, dtype="float64", data_dir=None)
        net = torch.build(spec.model, dtype="float64", device="cpu")
        p = net.load(init_params(spec.model, seed=0, dtype="float64"))
        T, K = spec.dynamics.T, spec.dynamics.K
        mid, _ = net.free_phase(p, x, steps=T - K)
        star, residual = net.free_phase(p, x, steps=K, start=mid)
        assert residual < 1e-6
        bptt = net.bptt_trace(p, x, y, start=mid, steps=K)
        ep = net.ep_trace(p, x, y, start=star, beta=spec.dynamics.beta, steps=K)
        found[angle] = total_cosine(bptt, ep)
    assert found["0"] > 0.95, found
    assert found["0"] > found["45"] > found["90"], found


@pytest.mark.parametrize("feedback", ["ep", "frozen"])
def test_training_records_the_feedback_angle_every_epoch(feedback: str, tmp_path: Path) -> None:
    """The training hook: `feedback_angle_deg.B1_0` per epoch equals the angle of the saved
    parameters; frozen feedback keeps B at its initial value (the angle still moves with W)."""
    torch = Registry().get_backends().get("torch")
    if torch is None:
        pytest.skip("needs the torch backend")
    config = {
        "measure": ["gdu"],
        "model": {"setting": "P", "inputs": 12, "sizes": [3, 8], "activation": "sigm"},
        "dynamics": {"T": 10, "K": 4, "beta": 0.2},
        "data": {"source": "toy", "batch": 10},
        "train": {"epochs": 2, "lrs": [0.5, 0.5], "test_batch": 30, "feedback": feedback},
    }
    config["model"]["feedback_angle"] = 40
    spec = build_spec(config, name="t", cell="t", preset="quick", variant=(), where="test")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    data = TrainingData(
        x=rng.random((60, 12)).astype("float32"),
        y=np.eye(3, dtype="float32")[labels],
        x_test=rng.random((30, 12)).astype("float32"),
        labels_test=labels[:30],
    )
    initial = init_params(spec.model, seed=0, dtype="float32")
    for algorithm in ("ep", "bptt"):
        checkpoint = tmp_path / f"{algorithm}.npz"

        def run(epochs: int, resume: bool, algorithm: str = algorithm, checkpoint=checkpoint):
            return train_algorithm(
                torch,
                initial,
                data,
                spec=replace(spec, train=replace(spec.train, epochs=epochs)),
                algorithm=algorithm,
                dtype="float32",
                device="cpu",
                seed=0,
                beta=0.2,
                symmetric=False,
                checkpoint=checkpoint,
                resume=resume,
            )

        run(1, False)
        out = run(2, True)  # resumed: the curve from epoch 1 is kept
        angles = out["feedback_angle_deg.B1_0"]
        assert len(angles) == 2 and out["status"] == "ok"
        saved = load_checkpoint(checkpoint)
        assert saved is not None
        assert abs(angles[-1] - feedback_angles_deg(saved.params)["B1_0"]) < 1e-9
        assert abs(angles[0] - 40.0) > 1e-4  # W (and B unless frozen) moved
        same = np.array_equal(saved.params["B1_0"], initial["B1_0"])
        assert same == (feedback == "frozen"), algorithm
