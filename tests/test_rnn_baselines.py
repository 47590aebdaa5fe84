"""The standard RNN baselines (`model.cell` rnn and lstm, docs/theory.md §6.4): torch and jax
agree in float64 on one training step's gradients (≤ 1e-10) from identical parameters; their
canonical parameters and initialisation; the task file's rules (BPTT only, tanh, P setting) as
one-line errors; the train measurement trains them by BPTT only and the table shows them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from epbench.cli import main
from epbench.config.tasks import resolve
from epbench.core.params import init_params, learning_rates, param_shapes, state_shapes
from epbench.core.spec import ModelSpec
from epbench.plugins.registry import Registry
from epbench.views.tables import overview

MODELS = {
    cell: ModelSpec(setting="P", inputs=6, sizes=(4, 5, 3), activation="tanh", cell=cell)
    for cell in ("rnn", "lstm")
}


def lines(path: Path) -> list[str]:
    """The lines of a records file."""
    return path.read_text().splitlines()


def test_canonical_shapes_and_torch_default_initialisation() -> None:
    lstm = MODELS["lstm"]
    assert param_shapes(lstm) == {
        "W0_1": (4, 5), "b0": (4,),
        "W1_1": (20, 5), "W1_2": (20, 3), "b1": (20,),
        "W2_2": (12, 3), "W2_x": (12, 6), "b2": (12,),
    }  # fmt: skip
    assert state_shapes(lstm, 2) == {"s0": (2, 4), "s1": (2, 10), "s2": (2, 6)}  # [h, c]
    params = init_params(lstm, seed=0)
    for name, value in params.items():  # U(±1/√hidden) of the layer, read-out U(±1/√sizes[1])
        bound = 1 / np.sqrt(lstm.sizes[max(int(name[1]), 1)])
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.5 * bound, name
    assert learning_rates(lstm, (0.1, 0.2, 0.3))["W2_x"] == 0.3


@pytest.mark.parametrize("cell", MODELS)
def test_torch_and_jax_agree_on_a_training_step(cell: str) -> None:
    """Float64 parity on identical parameters: the updated parameters of one BPTT step (lr 1,
    so the gradients), the per-step traces and the free phase, to 1e-10."""
    model = MODELS[cell]
    init = init_params(model, seed=7)
    rng = np.random.default_rng(2)
    x, y = rng.random((5, model.inputs)), np.eye(model.outputs)[[0, 1, 2, 3, 0]]
    lrs = learning_rates(model, (1.0,) * len(model.sizes))
    out = {}
    for name in ("torch", "jax"):
        net = Registry().get_backend(name).build(model, dtype="float64", device="cpu")
        step = net.bptt_step(net.load(init), x, y, free_steps=12, steps=5, lrs=lrs)
        grads = {k: init[k] - v for k, v in net.dump(step[0]).items()}
        params = net.load(init)
        start, residual = net.free_phase(params, x, steps=7)
        traces = net.bptt_trace(params, x, y, start=start, steps=5)
        out[name] = grads, traces, net.states(start), float(step[1]), residual
    (g_t, tr_t, s_t, loss_t, r_t), (g_j, tr_j, s_j, loss_j, r_j) = out["torch"], out["jax"]
    for mine, other in ((g_t, g_j), (tr_t, tr_j), (s_t, s_j)):
        assert mine.keys() == other.keys()
        for k in mine:
            scale = max(float(np.abs(other[k]).max()), 1e-300)
            assert float(np.abs(mine[k] - other[k]).max()) <= 1e-10 * max(scale, 1.0), k
    assert loss_t == pytest.approx(loss_j, rel=1e-12) and r_t == pytest.approx(r_j, rel=1e-9)
    assert max(float(np.abs(g).max()) for g in g_t.values()) > 1e-3  # a gradient, not zeros


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("model.cell=gru", ["model.cell", "one of phi, rnn, lstm", "gru"]),
        ("train.algorithms=['ep','bptt']", ["train.algorithms", '["bptt"]', "Φ"]),
        ("model.activation=sigm", ["model.activation", '"tanh"']),
    ],
)
def test_bad_rnn_settings_exit_2_with_one_line(
    override: str, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "rnn-baselines[model=rnn]", "--preset", "quick", "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("epbench: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_rnn_cells_train_by_bptt_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The task's RNN and LSTM cells resolve to BPTT only; a tiny run of each trains and is
    tabulated (torch, 40 images, 8 hidden units, T = 4, K = 2)."""
    path = Registry().get_task_path("rnn-baselines")
    cells = {s.cell: s for s in resolve(path, preset="quick")}
    assert cells["rnn-baselines[model=lstm]"].train.algorithms == ("bptt",)
    assert cells["rnn-baselines[model=P-1h]"].train.algorithms == ("ep", "bptt")
    small = ["data.subset=40", "model.sizes=[10, 8]", "dynamics.T=4", "dynamics.K=2"]
    args = ["run", "rnn-baselines[model=rnn]", "rnn-baselines[model=lstm]", "--preset", "quick"]
    args += ["--backend", "torch", "--out", str(tmp_path), "--executor", "inline"]
    args += [a for s in small for a in ("--set", s)] + ["--set", "measure=['train']"]
    assert main(args) == 0, capsys.readouterr().err
    records = [
        json.loads(line) for f in tmp_path.rglob("*.jsonl") for line in f.read_text().splitlines()
    ]
    assert {r["status"] for r in records} == {"ok"} and len(records) == 2
    for r in records:
        assert set(r["metrics"]["train"]) == {"bptt"}
        assert len(r["metrics"]["train"]["bptt"]["test_error"]) == 1
    assert "rnn-baselines[model=lstm]" in overview(records)
