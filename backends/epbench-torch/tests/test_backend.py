"""The torch backend as a plugin: registration, support decisions, records, and the CUDA device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from epbench_torch import TorchBackend

from epbench.core.errors import BackendError
from epbench.core.params import init_params
from epbench.core.protocols import Backend, Network
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason
from epbench.plugins.registry import Registry

TOY = ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08)


def test_registered_through_the_entry_point():
    backend = Registry().get_backend("torch")
    assert isinstance(backend, TorchBackend) and isinstance(backend, Backend)
    network = backend.build(TOY, dtype="float64", device="cpu")
    assert isinstance(network, Network)
    assert (network.model, network.dtype, network.device) == (TOY, "float64", "cpu")


def test_support_reasons():
    """`supports` gives the backend's own reasons only; the core's names check comes first
    (`support_reason`), and `build` raises its text."""
    backend = TorchBackend()
    assert backend.supports(TOY, dtype="float32", device="cpu") is None
    cuda = backend.supports(TOY, dtype="float64", device="cuda")
    assert (cuda is None) == torch.cuda.is_available()
    assert "dtype" in support_reason(backend, TOY, dtype="float16", device="cpu")
    assert "device" in support_reason(backend, TOY, dtype="float64", device="tpu")
    with pytest.raises(BackendError, match="dtype"):
        backend.build(TOY, dtype="int8", device="cpu")


def test_versions_and_device_info():
    backend = TorchBackend()
    assert backend.versions()["torch"] == torch.__version__
    assert backend.device_info("cpu")


def test_arguments_are_checked():
    """Wrong parameter shapes, missing parameters or learning rates, negative step counts, β = 0,
    K > T and a batch of the wrong width are refused with one line (epbench.core.validate)."""
    network = TorchBackend().build(TOY, dtype="float64", device="cpu")
    params = init_params(TOY, seed=0)
    native = network.load(params)
    x, y = np.zeros((2, TOY.inputs)), np.eye(TOY.outputs)[:2]
    lrs = dict.fromkeys(params, 0.1)
    wrong = params | {"W0_1": params["W0_1"].T}
    with pytest.raises(BackendError, match=r"expected parameter W0_1 of shape \(10, 50\)"):
        network.load(wrong)
    with pytest.raises(BackendError, match="W0_1 missing"):
        network.load({k: v for k, v in params.items() if k != "W0_1"})
    with pytest.raises(BackendError, match=r"expected steps ≥ 0 \(an integer\), found -1"):
        network.free_phase(native, x, steps=-1)
    with pytest.raises(BackendError, match=r"expected a finite non-zero beta, found 0\.0"):
        network.ep_step(native, x, y, free_steps=5, steps=2, beta=0.0, lrs=lrs)
    with pytest.raises(BackendError, match="found none for W0_x, b0, W1_x, b1"):
        network.bptt_step(native, x, y, free_steps=5, steps=2, lrs={"W0_1": 0.1})
    with pytest.raises(BackendError, match="expected steps ≤ free_steps = 5, found steps = 6"):
        network.bptt_step(native, x, y, free_steps=5, steps=6, lrs=lrs)
    with pytest.raises(BackendError, match=r"expected x of shape \(B, 5\), found shape \(2, 4\)"):
        network.predict(native, x[:, :4], steps=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    """A GDU cell and a training step give the CPU's numbers on the GPU (float64)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, TOY.inputs))
    y = np.eye(TOY.outputs)[rng.integers(TOY.outputs, size=3)]
    lrs = dict.fromkeys(init_params(TOY, seed=0), 0.1)
    results = {}
    for device in ("cpu", "cuda"):
        network = TorchBackend().build(TOY, dtype="float64", device=device)
        params = network.load(init_params(TOY, seed=0))
        start, _ = network.free_phase(params, x, steps=300)
        s, residual = network.free_phase(params, x, steps=20, start=start)
        bptt = network.bptt_trace(params, x, y, start=start, steps=20)
        ep = network.ep_trace(params, x, y, start=s, beta=0.01, steps=20, symmetric=True)
        params, loss, errors = network.bptt_step(params, x, y, free_steps=50, steps=10, lrs=lrs)
        params, loss, errors = network.ep_step(
            params, x, y, free_steps=50, steps=10, beta=0.1, lrs=lrs
        )
        network.synchronize()
        assert loss.device.type == device
        results[device] = (bptt, ep, network.dump(params), float(loss), int(errors), residual)
    cpu, gpu = results["cpu"], results["cuda"]
    for a, b in zip(cpu[:3], gpu[:3], strict=True):
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert gpu[3] == pytest.approx(cpu[3], rel=1e-9) and gpu[4] == cpu[4]
    assert gpu[5] == pytest.approx(cpu[5], rel=1e-6, abs=1e-14)


def test_thread_count_restored_and_zero_steps():
    """Small models step single-threaded (SERIAL_WORK) and give torch its thread count back;
    K = 0 gives empty traces."""
    network = TorchBackend().build(TOY, dtype="float64", device="cpu")
    params = network.load(init_params(TOY, seed=0))
    x = np.zeros((2, TOY.inputs))
    y = np.eye(TOY.outputs)[:2]
    threads = torch.get_num_threads()
    s, _ = network.free_phase(params, x, steps=5)
    assert torch.get_num_threads() == threads
    for trace in (
        network.ep_trace(params, x, y, start=s, beta=0.1, steps=0),
        network.bptt_trace(params, x, y, start=s, steps=0),
    ):
        assert trace["W1_x"].shape == (0, 50, 5) and trace["s1"].shape == (0, 50)
    states = network.states(s)
    again, _ = network.free_phase(params, x, steps=0, start=tuple(states.values()))
    np.testing.assert_array_equal(network.states(again)["s1"], states["s1"])
