"""Deliberately broken backends, each wrong in exactly one way (tests/test_conformance_broken.py).

Defects in the dynamics live in `NumpyBackend`, a compact numpy implementation of the fully
connected, tied EB and P models (docs/theory.md §3.2-§3.3) with a `fault` flag:

    "nudge-inside-sigma"  P setting: s⁰ ← σ(h⁰ + β (y − s⁰)) instead of σ(h⁰) + β (y − s⁰)
    "raw-input"           EB setting: the input drive uses x instead of ρ(x)

`NumpyBackend()` without a fault is the correct control. Defects in an output convention are
wrappers around the torch backend (`BrokenTorchBackend`), which compute the real numbers and
transform them:

    "bptt-reversed"       BPTT traces in reversed time order (index t counting forward)
    "bptt-state-mean"     ∇BPTT_s averaged over the batch instead of summed (divided by B again)
    "symmetric-sign"      symmetric estimator with the sign of β wrong in its −β half:
                          (Δ(+β) − Δ(−β)) / 2, in the traces and in the symmetric EP step
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec

Array = np.ndarray
States = list[Array]
Params = dict[str, Array]

NUMPY_FAULTS = ("nudge-inside-sigma", "raw-input")
TORCH_DEFECTS = ("bptt-reversed", "bptt-state-mean", "symmetric-sign")


def _sigm(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(2.0 * (x - 0.5)))  # 1 / (1 + e^{−4(x − ½)}), no overflow


def activation(name: str) -> tuple[Callable[[Array], Array], ...]:
    """(f, f', f'') of an activation, each a function of its argument (docs/theory.md §3)."""
    if name == "tanh":
        return (
            np.tanh,
            lambda x: 1.0 - np.tanh(x) ** 2,
            lambda x: -2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2),
        )
    if name == "sigm":
        return (
            _sigm,
            lambda x: 4.0 * _sigm(x) * (1.0 - _sigm(x)),
            lambda x: 16.0 * _sigm(x) * (1.0 - _sigm(x)) * (1.0 - 2.0 * _sigm(x)),
        )
    return (
        lambda x: np.clip(x, 0.0, 1.0),
        lambda x: ((x >= 0.0) & (x <= 1.0)).astype(x.dtype),
        np.zeros_like,
    )


class NumpyNetwork:
    """One tied fully connected model (EB or P) in numpy, optionally with one `fault`."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str, fault: str | None) -> None:
        self.model, self.dtype, self.device, self.fault = model, dtype, device, fault
        self.f, self.df, self.ddf = activation(model.activation)
        self.eb = model.setting == "EB"
        self.eps = model.epsilon if self.eb else 1.0
        self.N = model.depth
        self.shapes = param_shapes(model)

    def load(self, params: dict[str, Array]) -> Params:
        return {name: np.array(params[name], dtype=self.dtype) for name in self.shapes}

    def dump(self, params: Params) -> dict[str, Array]:
        return {name: value.copy() for name, value in params.items()}

    def states(self, states: States) -> dict[str, Array]:
        return {f"s{n}": s.copy() for n, s in enumerate(states)}

    def synchronize(self) -> None:
        """Nothing is ever queued."""

    def _x(self, x: Any) -> Array:
        """r_x: ρ(x) in the EB setting (raw x with the "raw-input" fault), x in the P setting."""
        x = np.asarray(x, dtype=self.dtype)
        return self.f(x) if self.eb and self.fault != "raw-input" else x

    def _r(self, s: States) -> States:
        return [self.f(t) for t in s] if self.eb else list(s)

    def _drives(self, p: Params, r: States, rx: Array) -> States:
        """hⁿ = [n<N] rⁿ⁺¹ W{n}_{n+1}ᵀ + [n>0] rⁿ⁻¹ W{n−1}_{n} + [n∈input] r_x W{n}_xᵀ + bₙ."""
        h = []
        for n in range(self.N + 1):
            hn = p[f"b{n}"] + (rx @ p[f"W{n}_x"].T if n in self.model.input_layers else 0.0)
            if n < self.N:
                hn = hn + r[n + 1] @ p[f"W{n}_{n + 1}"].T
            if n > 0:
                hn = hn + r[n - 1] @ p[f"W{n - 1}_{n}"]
            h.append(hn)
        return h

    def _step(
        self, p: Params, s: States, rx: Array, y: Array | None = None, beta: float = 0.0
    ) -> States:
        """One synchronous step; nudged with β (y − s⁰) (εβ in EB) when beta ≠ 0."""
        h = self._drives(p, self._r(s), rx)
        nudge = beta * (y - s[0]) if beta else 0.0
        if self.eb:
            new = [t + self.eps * (self.df(t) * hn - t) for t, hn in zip(s, h, strict=True)]
            new[0] = new[0] + self.eps * nudge
            return new
        if self.fault == "nudge-inside-sigma":
            h[0] = h[0] + nudge
            return [self.f(hn) for hn in h]
        new = [self.f(hn) for hn in h]
        new[0] = new[0] + nudge
        return new

    def _run(
        self, p: Params, rx: Array, s: States, steps: int, y: Array | None = None, beta: float = 0.0
    ) -> list[States]:
        """The states s_0 = s, s_1, …, s_steps."""
        out = [s]
        for _ in range(steps):
            out.append(self._step(p, out[-1], rx, y, beta))
        return out

    def _start(self, start: States | None, batch: int) -> States:
        if start is None:
            return [np.zeros((batch, w), dtype=self.dtype) for w in self.model.sizes]
        return [np.asarray(t, dtype=self.dtype) for t in start]

    def free_phase(
        self, params: Params, x: Any, *, steps: int, start: States | None = None
    ) -> tuple[States, float]:
        rx = self._x(x)
        run = self._run(params, rx, self._start(start, len(rx)), steps)
        if steps == 0:
            return run[-1], 0.0
        diff = sum(float(np.sum((a - b) ** 2)) for a, b in zip(run[-1], run[-2], strict=True))
        return run[-1], float(np.sqrt(diff))

    def predict(self, params: Params, x: Any, *, steps: int) -> Array:
        return self.free_phase(params, x, steps=steps)[0][0].argmax(1)

    def _dphi(self, s: States, rx: Array) -> Params:
        """∂Φ/∂θ at s, batch mean (without the ε of Φ_ε in EB)."""
        r, B = self._r(s), len(rx)
        out = {}
        for n in range(self.N + 1):
            if n < self.N:
                out[f"W{n}_{n + 1}"] = r[n].T @ r[n + 1] / B
            if n in self.model.input_layers:
                out[f"W{n}_x"] = r[n].T @ rx / B
            out[f"b{n}"] = r[n].mean(0)
        return out

    def _ep_one(
        self, p: Params, rx: Array, y: Array, start: States, beta: float, steps: int
    ) -> dict[str, Array]:
        run = self._run(p, rx, start, steps, y, beta)
        phis = [self._dphi(s, rx) for s in run]
        out = {
            name: np.array([(b[name] - a[name]) / beta for a, b in itertools.pairwise(phis)])
            for name in self.shapes
        }
        for n in range(self.N + 1):
            out[f"s{n}"] = np.array(
                [(b[n] - a[n]).mean(0) / (self.eps * beta) for a, b in itertools.pairwise(run)]
            )
        return {k: v.reshape(steps, *self._shape(k)).astype(self.dtype) for k, v in out.items()}

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name) or (self.model.sizes[int(name[1:])],)

    def _betas(self, beta: float, symmetric: bool) -> tuple[float, ...]:
        return (abs(beta), -abs(beta)) if symmetric else (float(beta),)

    def ep_trace(
        self,
        params: Params,
        x: Any,
        y: Any,
        *,
        start: States,
        beta: float,
        steps: int,
        symmetric: bool = False,
    ) -> dict[str, Array]:
        rx, y = self._x(x), np.asarray(y, dtype=self.dtype)
        start = self._start(start, len(rx))
        runs = [self._ep_one(params, rx, y, start, b, steps) for b in self._betas(beta, symmetric)]
        return {k: sum(run[k] for run in runs) / len(runs) for k in runs[0]}

    def _loss(self, s0: Array, y: Array) -> tuple[Array, Array]:
        loss = 0.5 * np.mean(np.sum((s0 - y) ** 2, axis=1))
        return np.asarray(loss, dtype=self.dtype), np.asarray(np.sum(s0.argmax(1) != y.argmax(1)))

    def ep_step(
        self,
        params: Params,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
        symmetric: bool = False,
    ) -> tuple[Params, Array, Array]:
        rx, y = self._x(x), np.asarray(y, dtype=self.dtype)
        star = self._run(params, rx, self._start(None, len(rx)), free_steps)[-1]
        phi_star, betas = self._dphi(star, rx), self._betas(beta, symmetric)
        new = {k: v.copy() for k, v in params.items()}
        for b in betas:
            phi = self._dphi(self._run(params, rx, star, steps, y, b)[-1], rx)
            for name in new:
                new[name] += lrs[name] * (phi[name] - phi_star[name]) / (b * len(betas))
        return new, *self._loss(star[0], y)

    def _backward(self, p: Params, rx: Array, y: Array, run: list[States]):
        """Yield (Σ_b ∂L/∂s_{K−t}, ∂L/∂θ_{K−t}) for t = 0 … K−1, one backward pass."""
        g = [np.zeros_like(t) for t in run[-1]]
        g[0] = (run[-1][0] - y) / len(rx)
        for k in range(len(run) - 2, -1, -1):
            s, r = run[k], self._r(run[k])
            h = self._drives(p, r, rx)
            delta = (
                [self.eps * gn * self.df(t) for gn, t in zip(g, s, strict=True)]
                if self.eb
                else [gn * self.df(hn) for gn, hn in zip(g, h, strict=True)]
            )
            grads = {}
            for n in range(self.N + 1):
                if n < self.N:
                    grads[f"W{n}_{n + 1}"] = delta[n].T @ r[n + 1] + r[n].T @ delta[n + 1]
                if n in self.model.input_layers:
                    grads[f"W{n}_x"] = delta[n].T @ rx
                grads[f"b{n}"] = delta[n].sum(0)
            yield [gn.sum(0) for gn in g], grads
            back = [
                (delta[n - 1] @ p[f"W{n - 1}_{n}"] if n > 0 else 0.0)
                + (delta[n + 1] @ p[f"W{n}_{n + 1}"].T if n < self.N else 0.0)
                for n in range(self.N + 1)
            ]
            if self.eb:
                g = [
                    (1 - self.eps) * gn + self.eps * gn * self.ddf(t) * hn + self.df(t) * bn
                    for gn, t, hn, bn in zip(g, s, h, back, strict=True)
                ]
            else:
                g = back

    def bptt_trace(
        self, params: Params, x: Any, y: Any, *, start: States, steps: int
    ) -> dict[str, Array]:
        rx, y = self._x(x), np.asarray(y, dtype=self.dtype)
        run = self._run(params, rx, self._start(start, len(rx)), steps)
        pairs = list(self._backward(params, rx, y, run))
        out = {name: np.array([grads[name] for _, grads in pairs]) for name in self.shapes}
        out |= {f"s{n}": np.array([gs[n] for gs, _ in pairs]) for n in range(self.N + 1)}
        return {k: v.reshape(steps, *self._shape(k)).astype(self.dtype) for k, v in out.items()}

    def bptt_step(
        self, params: Params, x: Any, y: Any, *, free_steps: int, steps: int, lrs: dict[str, float]
    ) -> tuple[Params, Array, Array]:
        rx, y = self._x(x), np.asarray(y, dtype=self.dtype)
        mid = self._run(params, rx, self._start(None, len(rx)), free_steps - steps)[-1]
        run = self._run(params, rx, mid, steps)
        new = {k: v.copy() for k, v in params.items()}
        for _, grads in self._backward(params, rx, y, run):
            for name, value in grads.items():
                new[name] -= lrs[name] * value
        return new, *self._loss(run[-1][0], y)


class NumpyBackend:
    """Tied fully connected EB and P models on the CPU; `fault` one of NUMPY_FAULTS or None."""

    model_fields = frozenset({"setting", "inputs", "sizes", "input_to", "activation", "epsilon"})

    def __init__(self, fault: str | None = None) -> None:
        if fault is not None and fault not in NUMPY_FAULTS:
            raise ValueError(f"expected a fault in {NUMPY_FAULTS}, found {fault!r}")
        self.fault = fault
        self.name = f"numpy-{fault}" if fault else "numpy-control"

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def device_info(self, device: str) -> str:
        return "cpu"

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        if device != "cpu":
            return f"{self.name}: cpu only"
        if model.conv is not None or model.feedback_angle is not None or model.clamp:
            return f"{self.name}: tied fully connected models without clamping only"
        return None

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> NumpyNetwork:
        return NumpyNetwork(model, dtype=dtype, device=device, fault=self.fault)


class BrokenTorchNetwork:
    """A torch network whose outputs are transformed by one convention defect; everything
    else is delegated to the real network."""

    def __init__(self, inner: Any, defect: str) -> None:
        self._inner, self._defect = inner, defect

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def bptt_trace(
        self, params: Any, x: Any, y: Any, *, start: Any, steps: int
    ) -> dict[str, Array]:
        trace = self._inner.bptt_trace(params, x, y, start=start, steps=steps)
        if self._defect == "bptt-reversed":
            return {k: v[::-1].copy() for k, v in trace.items()}
        if self._defect == "bptt-state-mean":
            return {k: v / len(x) if k.startswith("s") else v for k, v in trace.items()}
        return trace

    def ep_trace(
        self,
        params: Any,
        x: Any,
        y: Any,
        *,
        start: Any,
        beta: float,
        steps: int,
        symmetric: bool = False,
    ) -> dict[str, Array]:
        if not (symmetric and self._defect == "symmetric-sign"):
            return self._inner.ep_trace(
                params, x, y, start=start, beta=beta, steps=steps, symmetric=symmetric
            )
        plus, minus = (
            self._inner.ep_trace(params, x, y, start=start, beta=b, steps=steps)
            for b in (abs(beta), -abs(beta))
        )
        return {k: (plus[k] - minus[k]) / 2 for k in plus}  # −Δ(−β): the wrong sign

    def ep_step(
        self,
        params: Any,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
        symmetric: bool = False,
    ):
        inner = self._inner
        if not (symmetric and self._defect == "symmetric-sign"):
            return inner.ep_step(
                params,
                x,
                y,
                free_steps=free_steps,
                steps=steps,
                beta=beta,
                lrs=lrs,
                symmetric=symmetric,
            )
        p0 = inner.dump(params)
        plus, loss, errors = inner.ep_step(
            inner.load(p0), x, y, free_steps=free_steps, steps=steps, beta=abs(beta), lrs=lrs
        )
        minus, _, _ = inner.ep_step(
            inner.load(p0), x, y, free_steps=free_steps, steps=steps, beta=-abs(beta), lrs=lrs
        )
        plus, minus = inner.dump(plus), inner.dump(minus)
        return inner.load({k: p0[k] + (plus[k] - minus[k]) / 2 for k in p0}), loss, errors


class BrokenTorchBackend:
    """The torch backend with one output-convention defect (TORCH_DEFECTS)."""

    def __init__(self, defect: str) -> None:
        from epbench_torch.backend import TorchBackend

        if defect not in TORCH_DEFECTS:
            raise ValueError(f"expected a defect in {TORCH_DEFECTS}, found {defect!r}")
        self._inner, self.defect = TorchBackend(), defect
        self.name = f"torch-{defect}"
        self.model_fields = self._inner.model_fields

    def versions(self) -> dict[str, str]:
        return self._inner.versions()

    def device_info(self, device: str) -> str:
        return self._inner.device_info(device)

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        return self._inner.supports(model, dtype=dtype, device=device)

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> BrokenTorchNetwork:
        return BrokenTorchNetwork(self._inner.build(model, dtype=dtype, device=device), self.defect)
