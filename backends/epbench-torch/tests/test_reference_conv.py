"""The re-created reference implementation (reference_conv.py) is a speed baseline only if it
computes what the backend's P-conv computes: one EP and one BPTT training step from the same
parameters and batch give the same updates (float64), on a small two-conv net and on the paper's
geometry; models it does not cover get None from the backend, not a wrong baseline."""

from __future__ import annotations

import numpy as np
import pytest
from epbench_torch import TorchBackend
from epbench_torch.reference_conv import ReferenceConvNetwork

from epbench.core.errors import BackendError
from epbench.core.params import init_params, param_shapes
from epbench.core.spec import ConvSpec, ModelSpec


def conv_model(conv: ConvSpec, outputs: int, **extra) -> ModelSpec:
    fields = {"setting": "P", "activation": "hardsigm", **extra}
    return ModelSpec(
        inputs=int(np.prod(conv.input)), sizes=conv.sizes(outputs), conv=conv, **fields
    )


SMALL = conv_model(ConvSpec(input=(1, 14, 14), channels=(3, 4), kernel=3, pool=2), 5)
PAPER_CONV = conv_model(ConvSpec(input=(1, 28, 28), channels=(32, 64), kernel=5, pool=2), 10)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize(("model", "batch"), [(SMALL, 4), (PAPER_CONV, 2)], ids=["small", "paper"])
@pytest.mark.parametrize("algorithm", ["ep", "bptt"])
def test_reference_steps_equal_the_backend_steps(model: ModelSpec, batch: int, algorithm: str):
    rng = np.random.default_rng(3)
    x = rng.random((batch, model.inputs))
    y = np.eye(model.sizes[0])[rng.integers(0, model.sizes[0], batch)]
    start = init_params(model, seed=1, dtype="float64")
    lrs = dict.fromkeys(param_shapes(model), 0.05)
    ours = TorchBackend().build(model, dtype="float64", device="cpu")
    reference = TorchBackend().reference_network(model, dtype="float64", device="cpu")
    assert isinstance(reference, ReferenceConvNetwork)
    updates = []
    for net in (ours, reference):
        params = net.load(start)
        if algorithm == "ep":
            out, loss, _ = net.ep_step(params, x, y, free_steps=25, steps=6, beta=0.4, lrs=lrs)
        else:
            out, loss, _ = net.bptt_step(params, x, y, free_steps=25, steps=6, lrs=lrs)
        after = {k: v.detach().cpu().numpy() for k, v in out.items()}
        updates.append(({k: after[k] - start[k] for k in start}, float(loss)))
    (mine, loss_mine), (theirs, loss_theirs) = updates
    assert loss_mine == pytest.approx(loss_theirs, rel=1e-12)
    for name in start:
        assert np.linalg.norm(mine[name]) > 0, name
        assert relative(theirs[name], mine[name]) < 1e-9, name


def test_models_outside_the_paper_geometry_get_no_reference() -> None:
    backend = TorchBackend()
    three = conv_model(
        ConvSpec(input=(1, 16, 16), channels=(2, 3, 4), kernel=3, padding=1, pool=2), 5
    )
    tanh = conv_model(SMALL.conv, 5, activation="tanh")  # type: ignore[arg-type]
    fully = ModelSpec(setting="P", inputs=6, sizes=[3, 4], activation="hardsigm")
    for model in (three, tanh, fully):
        assert backend.reference_network(model, dtype="float32", device="cpu") is None
    with pytest.raises(BackendError, match="P-conv"):
        ReferenceConvNetwork(three, dtype="float32", device="cpu")
    with pytest.raises(BackendError, match="one-sidedly"):
        net = ReferenceConvNetwork(SMALL, dtype="float64", device="cpu")
        params = net.load(init_params(SMALL, seed=0, dtype="float64"))
        x, y = np.zeros((1, SMALL.inputs)), np.eye(5)[:1]
        lrs = dict.fromkeys(param_shapes(SMALL), 0.1)
        net.ep_step(params, x, y, free_steps=2, steps=1, beta=0.1, lrs=lrs, symmetric=True)
