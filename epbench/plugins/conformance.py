"""The conformance suite every backend plugin runs: `check_backend(backend)`.

It builds a few small models (EB and P, toy-shaped and layered, each activation, with and without
clamping, and a small P-conv with padding and max-pooling), and for every (model, dtype, device)
the backend does not decline through `supports()` checks that the backend honours the contract
of `epbench.core.protocols`: parameter round trips, phase
composition, trace names and shapes, the symmetric estimator, the training steps against the traces,
prediction, determinism, BPTT against finite differences, the optional RTRL gradient against BPTT
(when the network has `rtrl_gradient`) — and, in float64 on the tied EB models, the GDU theorem
itself. A P-setting model with independent feedback weights (`feedback_angle`) is among the cases:
a backend that does not implement it must decline it through `supports()`.

Use it from a plugin's own tests::

    from epbench.plugins.conformance import check_backend
    def test_conformance():
        check_backend(MyBackend())

It raises AssertionError naming the model, dtype and check on the first violation, and returns the
list of checks it ran and skipped (with reasons).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from epbench.core.params import init_params, param_shapes, state_shapes
from epbench.core.protocols import Backend, Network
from epbench.core.spec import ConvSpec, ModelSpec


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    model: ModelSpec
    T: int
    K: int
    batch: int = 3


CASES = (
    Case(
        name="toy-EB-tanh",
        model=ModelSpec(
            setting="EB", inputs=5, sizes=(10, 12), input_to=(0, 1), activation="tanh", epsilon=0.2
        ),
        T=600,
        K=12,
    ),
    Case(
        name="EB-2h-sigm-clamp",
        model=ModelSpec(
            setting="EB", inputs=7, sizes=(4, 6, 5), activation="sigm", epsilon=0.2, clamp=True
        ),
        T=60,
        K=8,
    ),
    Case(
        name="P-2h-tanh",
        model=ModelSpec(setting="P", inputs=7, sizes=(4, 6, 5), activation="tanh"),
        T=80,
        K=10,
    ),
    Case(
        name="P-1h-hardsigm",
        model=ModelSpec(setting="P", inputs=7, sizes=(4, 9), activation="hardsigm"),
        T=40,
        K=6,
    ),
    Case(
        name="P-conv-hardsigm",
        # 1×12×12 → 3×3 conv (3 ch), pad 1 → pool 2 → s² (3, 6, 6) → conv (4 ch) → pool → s¹
        # (4, 3, 3) → fully connected → s⁰ (5).
        model=ModelSpec(
            setting="P",
            inputs=144,
            sizes=(5, 36, 108),
            activation="hardsigm",
            conv=ConvSpec(input=(1, 12, 12), channels=(3, 4), kernel=3, padding=1, pool=2),
        ),
        T=40,
        K=6,
    ),
    Case(
        name="P-2h-asymmetric",
        # independent feedback weights B1_0, B2_1 at 30° to W0_1ᵀ, W1_2ᵀ (vector-field dynamics)
        model=ModelSpec(
            setting="P", inputs=7, sizes=(4, 6, 5), activation="sigm", feedback_angle=30.0
        ),
        T=60,
        K=8,
    ),
)


def _batch(case: Case, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.random((case.batch, case.model.inputs)).astype(dtype)
    y = np.eye(case.model.outputs, dtype=dtype)[rng.integers(0, case.model.outputs, case.batch)]
    return x, y


def _close(label: str, got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{label}: shape {got.shape}, expected {want.shape}"
    scale = max(float(np.linalg.norm(want)), 1e-30)
    err = float(np.linalg.norm(got - want)) / scale
    assert err <= rtol or np.allclose(got, want, rtol=0, atol=rtol * 1e-3), (
        f"{label}: relative difference {err:.2e} > {rtol:.0e}"
    )


class _Checker:
    def __init__(self, backend: Backend, case: Case, dtype: str, device: str) -> None:
        self.case, self.dtype = case, dtype
        self.net: Network = backend.build(case.model, dtype=dtype, device=device)
        self.p_np = init_params(case.model, seed=3, dtype=dtype)
        self.x, self.y = _batch(case, dtype)
        self.rtol = 1e-9 if dtype == "float64" else 2e-4
        self.where = f"{backend.name}: {case.name} {dtype} {device}"

    def fresh(self):  # training steps may update parameters in place
        return self.net.load(self.p_np)

    def params_round_trip(self) -> None:
        dumped = self.net.dump(self.fresh())
        assert set(dumped) == set(self.p_np), f"{self.where}: dump keys {sorted(dumped)}"
        for name, value in self.p_np.items():
            assert dumped[name].dtype == np.dtype(self.dtype), f"{self.where}: {name} dtype"
            np.testing.assert_array_equal(dumped[name], value, err_msg=f"{self.where}: {name}")

    def phases(self) -> None:
        case, net, p = self.case, self.net, self.fresh()
        zero, residual = net.free_phase(p, self.x, steps=0)
        states = net.states(zero)
        shapes = state_shapes(case.model, case.batch)
        assert {k: v.shape for k, v in states.items()} == shapes, f"{self.where}: state shapes"
        assert all(not v.any() for v in states.values()), f"{self.where}: steps=0 not zeros"
        assert residual == 0.0, f"{self.where}: residual of 0 steps is {residual}"
        whole, res_whole = net.free_phase(p, self.x, steps=case.T)
        mid, _ = net.free_phase(p, self.x, steps=case.T - case.K)
        split, res_split = net.free_phase(p, self.x, steps=case.K, start=mid)
        again, _ = net.free_phase(p, self.x, steps=case.T)
        for name, value in net.states(whole).items():
            _close(
                f"{self.where}: free phase T vs (T−K)+K, {name}",
                net.states(split)[name],
                value,
                self.rtol,
            )
            np.testing.assert_array_equal(
                net.states(again)[name],
                value,
                err_msg=f"{self.where}: free phase not deterministic",
            )
        assert np.isfinite(res_whole) and res_whole >= 0, f"{self.where}: residual {res_whole}"
        _close(f"{self.where}: residual", np.array(res_split), np.array(res_whole), 1e-3)
        predicted = net.predict(p, self.x, steps=case.T)
        expected = net.states(whole)["s0"].argmax(axis=1)
        assert predicted.shape == (case.batch,), f"{self.where}: predict shape {predicted.shape}"
        np.testing.assert_array_equal(predicted, expected, err_msg=f"{self.where}: predict")

    def traces(self) -> dict[str, dict[str, np.ndarray]]:
        case, net, p = self.case, self.net, self.fresh()
        mid, _ = net.free_phase(p, self.x, steps=case.T - case.K)
        star, _ = net.free_phase(p, self.x, steps=case.K, start=mid)
        out = {
            "bptt": net.bptt_trace(p, self.x, self.y, start=mid, steps=case.K),
            "pos": net.ep_trace(p, self.x, self.y, start=star, beta=0.05, steps=case.K),
            "neg": net.ep_trace(p, self.x, self.y, start=star, beta=-0.05, steps=case.K),
            "sym": net.ep_trace(
                p, self.x, self.y, start=star, beta=0.05, steps=case.K, symmetric=True
            ),
        }
        want = {name: (case.K, *shape) for name, shape in param_shapes(case.model).items()}
        want.update({n: (case.K, *s[1:]) for n, s in state_shapes(case.model, 1).items()})
        for kind, trace in out.items():
            got = {name: np.shape(value) for name, value in trace.items()}
            assert got == want, f"{self.where}: {kind} trace shapes {got}, expected {want}"
        for name in want:
            _close(
                f"{self.where}: symmetric trace {name}",
                out["sym"][name],
                (out["pos"][name] + out["neg"][name]) / 2,
                self.rtol * 10,
            )
        return out

    def training_steps(self, traces: dict[str, dict[str, np.ndarray]]) -> None:
        case, net = self.case, self.net
        lrs = {name: 0.1 * (i + 1) for i, name in enumerate(param_shapes(case.model))}
        p, loss, errors = net.bptt_step(
            self.fresh(), self.x, self.y, free_steps=case.T, steps=case.K, lrs=lrs
        )
        after = net.dump(p)
        for name, value in self.p_np.items():
            _close(
                f"{self.where}: bptt_step {name} vs −lr·Σ_t ∇BPTT",
                after[name] - value,
                -lrs[name] * traces["bptt"][name].sum(axis=0),
                self.rtol * 10,
            )
        star = net.states(net.free_phase(self.fresh(), self.x, steps=case.T)[0])
        want_loss = 0.5 * np.mean(np.sum((star["s0"] - self.y) ** 2, axis=1))
        want_errors = int(np.sum(star["s0"].argmax(1) != self.y.argmax(1)))
        for label, got, want in (("bptt", loss, want_loss),):
            _close(f"{self.where}: {label}_step loss", np.array(float(got)), want, self.rtol * 10)
        assert int(errors) == want_errors, f"{self.where}: bptt_step errors {int(errors)}"
        for key, kwargs in (("pos", {"beta": 0.05}), ("sym", {"beta": 0.05, "symmetric": True})):
            p, loss, errors = net.ep_step(
                self.fresh(), self.x, self.y, free_steps=case.T, steps=case.K, lrs=lrs, **kwargs
            )
            after = net.dump(p)
            for name, value in self.p_np.items():
                _close(
                    f"{self.where}: ep_step({key}) {name} vs lr·Σ_t ΔEP",
                    after[name] - value,
                    lrs[name] * traces[key][name].sum(axis=0),
                    self.rtol * 10,
                )
            _close(f"{self.where}: ep_step loss", np.array(float(loss)), want_loss, self.rtol * 10)
            assert int(errors) == want_errors, f"{self.where}: ep_step errors {int(errors)}"

    def bptt_gradient(self) -> None:
        """Σ_t ∇BPTT_θ(t) is the gradient of the truncated loss: compare it with a central finite
        difference of L(θ) = ℓ(s_T) along a random direction, s_{T−K} held fixed (float64)."""
        case, net = self.case, self.net
        mid, _ = net.free_phase(self.fresh(), self.x, steps=case.T - case.K)
        bptt = net.bptt_trace(self.fresh(), self.x, self.y, start=mid, steps=case.K)
        rng = np.random.default_rng(11)
        direction = {k: rng.normal(size=v.shape) for k, v in self.p_np.items()}

        def loss(h: float) -> float:
            shifted = net.load({k: v + h * direction[k] for k, v in self.p_np.items()})
            s0 = net.states(net.free_phase(shifted, self.x, steps=case.K, start=mid)[0])["s0"]
            return 0.5 * float(np.mean(np.sum((s0 - self.y) ** 2, axis=1)))

        h = 1e-6
        numeric = (loss(h) - loss(-h)) / (2 * h)
        analytic = sum(float(np.vdot(bptt[k].sum(axis=0), d)) for k, d in direction.items())
        assert abs(numeric - analytic) <= 1e-5 * max(abs(analytic), 1e-8), (
            f"{self.where}: Σ_t ∇BPTT_θ · d = {analytic:.8e}, finite difference {numeric:.8e}"
        )

    def rtrl(self) -> None:
        """The optional `rtrl_gradient` (forward-mode, PAPER.md §6.3) equals Σ_t ∇BPTT_θ(t)."""
        case, net, p = self.case, self.net, self.fresh()
        mid, _ = net.free_phase(p, self.x, steps=case.T - case.K)
        bptt = net.bptt_trace(p, self.x, self.y, start=mid, steps=case.K)
        rtrl = net.rtrl_gradient(p, self.x, self.y, start=mid, steps=case.K)
        assert set(rtrl) == set(self.p_np), f"{self.where}: rtrl_gradient keys {sorted(rtrl)}"
        for name, value in bptt.items():
            if name in self.p_np:
                _close(f"{self.where}: RTRL vs Σ_t ∇BPTT {name}", rtrl[name], value.sum(0), 1e-9)

    def theorem(self) -> None:
        """GDU (PAPER.md §2): at the fixed point, ΔEP → −∇BPTT, error O(β) and O(β²) symmetric."""
        case, net, p = self.case, self.net, self.fresh()
        mid, _ = net.free_phase(p, self.x, steps=case.T - case.K)
        star, residual = net.free_phase(p, self.x, steps=case.K, start=mid)
        assert residual < 1e-9, f"{self.where}: free phase did not settle (residual {residual})"
        bptt = net.bptt_trace(p, self.x, self.y, start=mid, steps=case.K)

        def error(beta: float, symmetric: bool) -> float:
            ep = net.ep_trace(
                p, self.x, self.y, start=star, beta=beta, steps=case.K, symmetric=symmetric
            )
            num = sum(float(np.sum((ep[k] + bptt[k]) ** 2)) for k in bptt)
            return (num / sum(float(np.sum(v**2)) for v in bptt.values())) ** 0.5

        one = [error(b, False) for b in (1e-2, 1e-3)]
        sym = [error(b, True) for b in (1e-2, 1e-3)]
        assert one[1] < 1e-2, f"{self.where}: GDU error {one[1]:.2e} at β=1e-3"
        assert 5 <= one[0] / one[1] <= 20, f"{self.where}: one-sided error not O(β): {one}"
        assert sym[0] / max(sym[1], 1e-300) >= 50 or sym[1] < 1e-9, (
            f"{self.where}: symmetric error not O(β²): {sym}"
        )


def check_backend(
    backend: Backend,
    *,
    dtypes: Iterable[str] = ("float64", "float32"),
    devices: Iterable[str] = ("cpu",),
    cases: Iterable[Case] = CASES,
) -> list[str]:
    """Run the conformance checks; return "ran: …" / "skipped: … (reason)" lines."""
    report = []
    for device in devices:
        for dtype in dtypes:
            for case in cases:
                reason = backend.supports(case.model, dtype=dtype, device=device)
                label = f"{case.name} {dtype} {device}"
                if reason:
                    report.append(f"skipped: {label} ({reason})")
                    continue
                checker = _Checker(backend, case, dtype, device)
                checker.params_round_trip()
                checker.phases()
                traces = checker.traces()
                checker.training_steps(traces)
                if dtype == "float64":
                    checker.bptt_gradient()
                    if hasattr(checker.net, "rtrl_gradient"):
                        checker.rtrl()
                exact = case.model.setting == "EB" and case.model.feedback_angle is None
                if dtype == "float64" and exact and not case.model.clamp:
                    checker.theorem()  # F = ∂Φ/∂s: tied EB dynamics without clamping
                report.append(f"ran: {label}")
    assert any(line.startswith("ran") for line in report), (
        f"{backend.name}: every conformance case was declined: {report}"
    )
    return report
