"""The torch standard RNN baselines (`epbench_torch.rnn`) against torch's own cells, layer by layer
(float64, tiny models). The gradient checks of both backends are in tests/test_rnn_gradients.py."""

from __future__ import annotations

import numpy as np
import pytest

from epbench.core.params import init_params
from epbench.core.spec import ModelSpec

MODELS = {
    cell: ModelSpec(setting="P", inputs=4, sizes=(3, 5, 2), activation="tanh", cell=cell)
    for cell in ("rnn", "lstm")
}
T = 6


def _data(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((4, model.inputs)), np.eye(model.outputs)[[0, 1, 2, 1]]


@pytest.mark.parametrize("cell", MODELS)
def test_a_step_is_what_the_torch_cells_compute(cell: str):
    """Each layer of `epbench_torch.rnn.step` equals `torch.nn.RNNCell` / `LSTMCell` with the
    canonical weights (bias_hh = 0) and the read-out a `torch.nn.Linear`, to rounding."""
    import torch
    from epbench_torch.rnn import projection, step
    from torch.func import functional_call

    model = MODELS[cell]
    init = {k: torch.tensor(v) for k, v in init_params(model, seed=1).items()}
    x = torch.tensor(_data(model)[0])
    rng = np.random.default_rng(4)
    widths = [w * (2 if n and cell == "lstm" else 1) for n, w in enumerate(model.sizes)]
    s = tuple(torch.tensor(rng.standard_normal((4, w))) for w in widths)
    got = step(model, init, projection(model, init, x), s)
    kind = torch.nn.LSTMCell if cell == "lstm" else torch.nn.RNNCell
    a = x
    for n in (2, 1):
        below = "W2_x" if n == 2 else "W1_2"
        module = kind(a.shape[1], model.sizes[n], dtype=torch.float64)
        weights = {
            "weight_ih": init[below], "weight_hh": init[f"W{n}_{n}"],
            "bias_ih": init[f"b{n}"], "bias_hh": torch.zeros_like(init[f"b{n}"]),
        }  # fmt: skip
        w = model.sizes[n]
        hx = (s[n][:, :w], s[n][:, w:]) if cell == "lstm" else s[n]
        out = functional_call(module, weights, (a, hx))
        want = torch.cat(out, dim=1) if cell == "lstm" else out
        torch.testing.assert_close(got[n], want, rtol=1e-13, atol=1e-14)
        a = out[0] if cell == "lstm" else out
    readout = functional_call(
        torch.nn.Linear(3, 5, dtype=torch.float64), {"weight": init["W0_1"], "bias": init["b0"]}, a
    )
    torch.testing.assert_close(got[0], readout, rtol=1e-13, atol=1e-14)
