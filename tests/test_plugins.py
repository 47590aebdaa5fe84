"""Plugin loading, registry errors, and the example third-party backend (examples/epbench-numpy).

The example backend is imported in-process from its source folder (no install needed) and run
through the conformance suite; its hand-written BPTT is checked against finite differences; and one
test installs it into a fresh virtual environment to show the entry point really is what loads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

import epbench
from epbench.core.errors import BackendError, EpbenchError, UnknownNameError
from epbench.core.params import init_params
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "epbench-numpy"
PACKAGE = "epbench_numpy_example"


@pytest.fixture
def example(monkeypatch):
    """The example plugin module, imported from its source folder for the duration of one test."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    for name in (PACKAGE, f"{PACKAGE}.network"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module(PACKAGE)
    for name in (PACKAGE, f"{PACKAGE}.network"):
        sys.modules.pop(name, None)


@pytest.fixture
def backend(example):
    pm = make_plugin_manager(load_entry_points=False, plugins=[example])
    return Registry(pm).get_backend("numpy-example")


def test_example_backend_passes_the_conformance_suite(backend):
    from epbench.plugins.conformance import assert_conforms

    assert_conforms(backend)


def test_unsupported_combinations_are_declined_with_a_reason(backend):
    p = ModelSpec(setting="P", inputs=4, sizes=(3, 5))
    eb = ModelSpec(setting="EB", inputs=4, sizes=(3, 5))
    assert backend.supports(p, dtype="float64", device="cpu") is None
    assert "P setting" in backend.supports(eb, dtype="float64", device="cpu")
    assert "cuda" in backend.supports(p, dtype="float64", device="cuda")
    assert "float16" in support_reason(backend, p, dtype="float16", device="cpu")
    clamped = ModelSpec(setting="P", inputs=4, sizes=(3, 5), clamp=True)  # a field it lacks
    assert "ModelSpec.clamp" in support_reason(backend, clamped, dtype="float64", device="cpu")
    with pytest.raises(BackendError, match="P setting"):
        backend.build(eb, dtype="float64", device="cpu")


def test_duplicate_backend_name_is_an_error_naming_both_modules(example):
    class Impostor:  # a whole Backend, under a name that is taken
        name = "numpy-example"
        model_fields = frozenset({"setting", "inputs", "sizes"})

        def versions(self):
            return {}

        def device_info(self, device):
            return device

        def supports(self, model, *, dtype, device):
            return None

        def build(self, model, *, dtype, device):
            raise NotImplementedError

    class ImpostorPlugin:
        @epbench.hookimpl
        def epbench_register_backends(self, register):
            register(Impostor())

    pm = make_plugin_manager(load_entry_points=False, plugins=[example, ImpostorPlugin()])
    with pytest.raises(EpbenchError, match="registered twice") as info:
        Registry(pm)
    assert f"{PACKAGE}.network" in str(info.value)
    assert Impostor.__module__ in str(info.value)


def test_unknown_backend_name_lists_the_known_ones(example):
    registry = Registry(make_plugin_manager(load_entry_points=False, plugins=[example]))
    with pytest.raises(UnknownNameError, match="known: numpy-example") as info:
        registry.get_backend("numpy-exampel")
    assert "'numpy-exampel'" in str(info.value)


# --- the hand-written backward pass -------------------------------------------------------------


def _tiny(activation: str, scale: float = 2.0):
    """A 3-layer model whose input feeds two layers, parameters scaled up to be non-linear."""
    model = ModelSpec(
        setting="P", inputs=4, sizes=(3, 5, 4), input_to=(0, 2), activation=activation
    )
    params = {k: scale * v for k, v in init_params(model, seed=3).items()}
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(3, 4)), np.eye(3)[[0, 2, 1]]
    return model, params, x, y


@pytest.mark.parametrize("activation", ["tanh", "sigm"])
def test_bptt_trace_matches_finite_differences(backend, activation):
    """∇BPTT_θ(t) and ∇BPTT_s(t) equal central differences of L with θ perturbed in the single
    transition into s_{K−t} (a per-step copy of θ), and with s_{K−t} perturbed, respectively."""
    model, canonical, x, y = _tiny(activation)
    net = backend.build(model, dtype="float64", device="cpu")
    p = net.load(canonical)
    start, _ = net.free_phase(p, x, steps=6)
    K, eps = 4, 1e-6
    trace = net.bptt_trace(p, x, y, start=start, steps=K)

    def loss(per_step, s, first=0):
        for k in range(first, K):
            s, _ = net.free_phase(per_step[k], x, steps=1, start=s)
        return 0.5 * np.mean(np.sum((s[0] - y) ** 2, axis=1))

    for t in range(K):
        k = K - 1 - t  # the transition s_k → s_{k+1} = s_{K−t}
        for name in canonical:
            fd = np.zeros_like(canonical[name])
            for idx in np.ndindex(fd.shape):
                moved = []
                for sign in (1, -1):
                    q = {n: v.copy() for n, v in canonical.items()}
                    q[name][idx] += sign * eps
                    per_step = [p] * K
                    per_step[k] = net.load(q)
                    moved.append(loss(per_step, start))
                fd[idx] = (moved[0] - moved[1]) / (2 * eps)
            np.testing.assert_allclose(trace[name][t], fd, atol=1e-8, err_msg=f"{name} t={t}")
        s_t, _ = net.free_phase(p, x, steps=K - t, start=start)  # s_{K−t}
        for n, width in enumerate(model.sizes):
            fd = np.zeros(width)
            for j in range(width):
                moved = []
                for sign in (1, -1):
                    s = [a.copy() for a in s_t]
                    s[n][:, j] += sign * eps  # every example at once: Σ_b ∂L/∂s_b
                    moved.append(loss([p] * K, s, first=K - t))
                fd[j] = (moved[0] - moved[1]) / (2 * eps)
            np.testing.assert_allclose(trace[f"s{n}"][t], fd, atol=1e-8, err_msg=f"s{n} t={t}")


def test_ep_approaches_minus_bptt_where_the_dynamics_are_a_gradient(backend):
    """hardsigm with every unit inside (0, 1) is the identity, so there F = ∂Φ/∂s exactly
    (docs/theory.md §3) and the GDU theorem (§2) holds: ΔEP → −∇BPTT with error O(β) one-sided and
    O(β²) symmetric (the remaining non-linearity is the nudge's own dependence on s⁰_t)."""
    model = ModelSpec(setting="P", inputs=4, sizes=(3, 5, 4), activation="hardsigm")
    rng = np.random.default_rng(1)
    canonical = {k: 0.1 * v for k, v in init_params(model, seed=4).items()}
    canonical |= {f"b{n}": np.full(w, 0.5) for n, w in enumerate(model.sizes)}
    net = backend.build(model, dtype="float64", device="cpu")
    p = net.load(canonical)
    x, y = rng.uniform(size=(2, 4)), np.eye(3)[[2, 0]]
    s_star, residual = net.free_phase(p, x, steps=60)
    assert residual < 1e-14 and all(((s > 0.05) & (s < 0.95)).all() for s in s_star)
    bptt = net.bptt_trace(p, x, y, start=s_star, steps=5)
    assert bptt.keys() == {*canonical, "s0", "s1", "s2"}
    # Layer 2 cannot feel the output before step 2 (docs/theory.md §4).
    assert not bptt["W2_x"][:2].any() and np.abs(bptt["W2_x"][2]).min() > 0

    def error(beta, symmetric):
        ep = net.ep_trace(p, x, y, start=s_star, beta=beta, steps=5, symmetric=symmetric)
        assert ep.keys() == bptt.keys()
        return max(np.abs(ep[name] + bptt[name]).max() for name in bptt)

    assert 8 < error(-1e-2, False) / error(-1e-3, False) < 12
    assert 80 < error(1e-2, True) / error(1e-3, True) < 120
    assert error(1e-3, True) < 1e-6


def test_training_steps_apply_the_summed_traces(backend):
    """ep_step adds lr · Σ_t ΔEP_θ(t); bptt_step subtracts lr · Σ_t ∇BPTT_θ(t) (float32 here)."""
    model, canonical, x, y = _tiny("sigm", scale=1.0)
    net = backend.build(model, dtype="float32", device="cpu")
    p = net.load(canonical)
    x, y = x.astype("float32"), y.astype("float32")
    T, K, beta = 12, 5, 0.3
    lrs = {name: 0.1 * (i + 1) for i, name in enumerate(canonical)}
    s_star, _ = net.free_phase(p, x, steps=T)
    new, loss, errors = net.ep_step(
        p, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, symmetric=True
    )
    ep = net.ep_trace(p, x, y, start=s_star, beta=beta, steps=K, symmetric=True)
    assert loss.shape == () and errors.shape == ()
    np.testing.assert_allclose(loss, 0.5 * np.mean(np.sum((s_star[0] - y) ** 2, axis=1)), rtol=1e-6)
    assert errors == np.sum(np.argmax(s_star[0], axis=1) != np.argmax(y, axis=1))
    for name, value in net.dump(new).items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, canonical[name] + lrs[name] * ep[name].sum(0), atol=1e-5)
    new, _, _ = net.bptt_step(p, x, y, free_steps=T, steps=K, lrs=lrs)
    start, _ = net.free_phase(p, x, steps=T - K)
    bptt = net.bptt_trace(p, x, y, start=start, steps=K)
    for name, value in net.dump(new).items():
        np.testing.assert_allclose(
            value, canonical[name] - lrs[name] * bptt[name].sum(0), atol=1e-5
        )
    np.testing.assert_array_equal(net.predict(p, x, steps=T), np.argmax(s_star[0], axis=1))


# --- a real install -------------------------------------------------------------------------------


def test_pip_installed_example_is_found_through_its_entry_point(tmp_path):
    """A regular (non-editable) pip install into a fresh venv makes `epbench backends` list it."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not importable (needed to build the example without isolation)")
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not importable")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPBENCH_")}
    # It must really come from the install: the test process itself does not see it.
    assert "numpy-example" not in Registry(make_plugin_manager()).get_backends()

    home = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(home)
    python = home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # When this test runs inside a virtual environment, "system" site-packages are the base
    # interpreter's, not ours (where epbench, numpy, pip and hatchling live): expose ours after the
    # new venv's own site-packages with a .pth line (site.addsitedir also runs the .pth files there,
    # such as an editable install of epbench).
    dirs = [d for d in site.getsitepackages() if sys.prefix != sys.base_prefix]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    (Path(purelib) / "_epbench_test_parent.pth").write_text(lines)

    def run(*args):
        done = subprocess.run(
            [python, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run(
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        str(EXAMPLE_DIR),
    )
    assert "numpy-example" in run("-m", "epbench", "backends")
