"""The jax backend's `epbench.core.protocols.Network`: one model family's pure phase functions,
jitted once per network, behind the protocol's methods.

A model family is a module of pure functions that take the `ModelSpec` first — `network` (tied,
fully connected), `asymmetric` (independent feedback weights), `conv` (P-conv) — bundled as a
`Family`:

    free_phase(model, params, x, s, steps)                 → (s_T, ‖s_T − s_{T−1}‖), steps traced
    ep_traces_one(model, params, x, y, start, beta, steps)             → per-step EP traces
    bptt_traces(model, params, x, y, start, *, steps)                  → per-step BPTT traces
    ep_step(model, params, x, y, lrs, beta, *, free_steps, steps, symmetric) → (θ', loss, errors)
    bptt_step(model, params, x, y, lrs, *, free_steps, steps)                → (θ', loss, errors)
    rtrl(model, params, x, y, start, *, steps)     → Σ_t ∇BPTT_θ(t) (docs/theory.md §6.3), or None
    holomorphic_phase(model, params, x, y, start, beta, steps) → (traces, max |Im| of ρ's argument)
    holomorphic_step(model, params, x, y, lrs, beta, *, free_steps, steps, points) → as ep_step

The last two, where a family has them (the tied fully connected one), are holomorphic EP
(docs/theory.md §2.5): one complex β on complex arrays, and the training step over the phases of
`epbench.core.estimators.holomorphic_phases`; `estimator_traces` combines the phases.

Traces come back keyed by canonical names, states in canonical layout. A family may hold its
states in another layout inside the jit (`to_native` / `to_canonical`; P-conv: NHWC).

`JaxNetwork` does the rest once for every family: the scoped float64 (`jax.enable_x64` around each
call only, so it never leaks) and full-precision matmuls (no TF32 on GPU, so that backends agree);
512-bit vectors for XLA:CPU (`CPU_OPTIONS`, per jit); the argument checks
(`epbench.core.validate`); conversions; `rtrl_gradient` (`epbench.core.protocols.RtrlNetwork`)
exactly when the family has an `rtrl` function. Training steps
are asynchronous (`synchronize` waits), take the learning rates as device scalars converted once
per distinct `lrs` (Python floats are converted on every call, a cost comparable to a small step)
and the batch as numpy (a `jax.device_put` cost more than the jit's own transfer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from epbench.core.errors import BackendError
from epbench.core.estimators import holomorphic_phases
from epbench.core.holomorphic import check_points, check_strip
from epbench.core.params import param_shapes, state_shapes
from epbench.core.spec import ModelSpec
from epbench.core.validate import (
    check_batch,
    check_beta,
    check_lrs,
    check_params,
    check_steps,
    check_truncation,
)

Params = dict[str, Array]
States = tuple[Array, ...]
WHERE = "jax backend"

# XLA:CPU options of every jit on a CPU device: 512-bit vectors in element-wise loops where the CPU
# has them (the per-step σ(·) of the fully connected models ran about 1.5× faster; per element the
# arithmetic is unchanged).
CPU_OPTIONS = MappingProxyType({"xla_cpu_prefer_vector_width": 512})


def _same(s: States) -> States:
    return s


@dataclass(frozen=True)
class Family:
    """The pure functions of one model family (module doc) and the check of what it can run."""

    name: str
    unsupported: Callable[[ModelSpec], str | None]  # why `model` is not of this family, or None
    free_phase: Callable
    ep_traces_one: Callable  # one-sided nudge with the signed β (`estimator_traces` combines)
    bptt_traces: Callable
    ep_step: Callable
    bptt_step: Callable
    rtrl: Callable | None = None  # forward-mode truncated gradient, where the family has one
    to_native: Callable[[States], States] = _same  # canonical states → the layout inside the jit
    to_canonical: Callable[[States], States] = _same
    holomorphic_phase: Callable | None = None  # see module doc; None: no holomorphic EP
    holomorphic_step: Callable | None = None


def complex_copy(tree):
    """Every array of `tree` as a complex array of the matching precision (float32 → complex64,
    float64 → complex128): the inputs of a nudged phase at a complex β."""
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.result_type(a.dtype, jnp.complex64)), tree)


def estimator_traces(
    one: Callable, model: ModelSpec, params: Params, x, y, start, beta, steps: int, symmetric: bool
) -> Params:
    """EP traces of the estimator (docs/theory.md §2): `one(…, β, steps)` of the family, or
    symmetric, (Δ(+|β|) + Δ(−|β|)) / 2 with each Δ divided by its own signed β (bias O(β²))."""
    if not symmetric:
        return one(model, params, x, y, start, beta, steps)
    plus = one(model, params, x, y, start, jnp.abs(beta), steps)
    minus = one(model, params, x, y, start, -jnp.abs(beta), steps)
    return {k: (plus[k] + minus[k]) / 2 for k in plus}


def holomorphic_traces(
    one: Callable, phase: Callable, model: ModelSpec, params, x, y, start, beta, steps: int,
    points: int,
) -> tuple[Params, Array]:  # fmt: skip
    """Holomorphic EP traces (docs/theory.md §2.5): Re Σ_k w_k Δ(β_k) over `holomorphic_phases`
    with β_k = |β| · unit_k (the units are constants of the static N, β stays traced): `one` for
    a real point, `phase` on complex copies for a complex one. Also the largest |Im| of ρ's
    argument over the complex phases (checked by the caller)."""
    out, imag = {}, jnp.zeros((), jnp.abs(beta).dtype)
    for unit, w in holomorphic_phases(1.0, points):
        b = jnp.abs(beta) * unit
        if isinstance(unit, complex):
            part, im = phase(model, *complex_copy((params, x, y, start)), b, steps)
            imag = jnp.maximum(imag, im)
        else:
            part = one(model, params, x, y, start, b, steps)
        out = {k: w * jnp.real(v) + out.get(k, 0.0) for k, v in part.items()}
    return out, imag


class JaxNetwork:
    """One model of one family compiled for one dtype and device (implements
    `epbench.core.protocols.Network`).

    Native parameters: a dict of jax arrays keyed by canonical names; native states: a tuple of jax
    arrays in the family's layout. A `start` given as numpy arrays is read as canonical states,
    jax arrays as native ones. The free phase traces its step count (one compilation for every T,
    reused by `predict`); traces and training steps take K (and T) as static arguments.
    """

    def __init__(
        self, model: ModelSpec, *, family: Family, dtype: str, device: str, jax_device
    ) -> None:
        reason = family.unsupported(model)
        if reason is not None:
            raise BackendError(f"{WHERE}: {reason}")
        self.model, self.family, self.dtype, self.device = model, family, dtype, device
        self._device = jax_device
        self._shapes = param_shapes(model)
        self._state_shapes = {k: v[1:] for k, v in state_shapes(model, 1).items()}
        self._names = [*self._shapes, *self._state_shapes]
        cpu = jax_device is not None and jax_device.platform == "cpu"
        jit = partial(jax.jit, compiler_options=dict(CPU_OPTIONS) if cpu else None)
        self._free = jit(partial(family.free_phase, model))
        traces = partial(estimator_traces, family.ep_traces_one, model)
        self._ep = jit(traces, static_argnames=("steps", "symmetric"))
        self._bptt = jit(partial(family.bptt_traces, model), static_argnames=("steps",))
        training = ("free_steps", "steps", "symmetric")
        self._ep_step = jit(partial(family.ep_step, model), static_argnames=training)
        self._bptt_step = jit(partial(family.bptt_step, model), static_argnames=training[:2])
        if family.holomorphic_phase is not None:  # holomorphic EP, where the family has it
            holo = partial(holomorphic_traces, family.ep_traces_one, family.holomorphic_phase)
            self._holo = jit(partial(holo, model), static_argnames=("steps", "points"))
            step = partial(family.holomorphic_step, model)
            self._holo_step = jit(step, static_argnames=("free_steps", "steps", "points"))
        if family.rtrl is not None:  # the optional capability, only where the family has it
            self._rtrl = jit(partial(family.rtrl, model), static_argnames=("steps",))
            self.rtrl_gradient = self._rtrl_gradient
        self._pending: object = None  # outputs of the last asynchronous call, for synchronize()
        self._rates: tuple[dict, dict] | None = None  # the last `lrs` and their device scalars

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """x64 on for float64 networks only, and only inside the call; full-precision matmuls."""
        with jax.enable_x64(self.dtype == "float64"), jax.default_matmul_precision("highest"):
            yield

    # ---- conversions (call inside scope())

    def _put(self, a) -> Array:
        """numpy or jax → a jax array of this dtype on this device (no copy when it already is)."""
        if isinstance(a, jax.Array):
            return jax.device_put(a.astype(self.dtype), self._device)
        return jax.device_put(np.asarray(a, dtype=self.dtype), self._device)

    def _host(self, a) -> np.ndarray | Array:
        """A batch for a jitted training step: numpy in this dtype (the jit moves it to the device
        of the committed parameters), or the jax array as it is."""
        return self._put(a) if isinstance(a, jax.Array) else np.asarray(a, dtype=self.dtype)

    def _start(self, start, batch: int) -> States:
        """Native states: zeros, native jax arrays as they are, canonical numpy ones converted."""
        if start is None:
            start = [np.zeros((batch, *shape)) for shape in self._state_shapes.values()]
        if all(isinstance(v, jax.Array) for v in start):
            return tuple(self._put(v) for v in start)
        canonical = tuple(np.asarray(v) for v in start)
        return tuple(self._put(v) for v in self.family.to_native(canonical))

    def _rates_of(self, lrs: dict[str, float]) -> dict[str, Array]:
        """The learning rates as device scalars of this dtype, converted once per distinct `lrs`."""
        rates = check_lrs(self.model, lrs, where=WHERE)
        if self._rates is None or self._rates[0] != rates:
            self._rates = rates, {k: self._put(np.asarray(v)) for k, v in rates.items()}
        return self._rates[1]

    def _traces(self, out: Params) -> dict[str, np.ndarray]:
        """Canonical order (parameters, then states); zero-copy views on the CPU (read-only)."""
        return {k: np.asarray(out[k]) for k in self._names}

    def _no_traces(self) -> dict[str, np.ndarray]:
        """The traces of K = 0 steps: every series empty."""
        shapes = self._shapes | self._state_shapes
        return {k: np.zeros((0, *shapes[k]), dtype=self.dtype) for k in self._names}

    def _check(self, x, y=None, *, beta: float | None = None, **steps: int) -> None:
        """The arguments of a call (`epbench.core.validate`): the batch, β, the step counts."""
        check_batch(self.model, x, y, where=WHERE)
        for key, value in steps.items():
            check_steps(key, value, where=WHERE)
        if beta is not None:
            check_beta(beta, where=WHERE)

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → jax arrays on this network's device (copies)."""
        check_params(self.model, params, where=WHERE)
        with self.scope():
            self._pending = {k: self._put(np.array(params[k])) for k in self._shapes}
            return self._pending

    def dump(self, params: Params) -> dict[str, np.ndarray]:
        """Jax parameters → canonical numpy parameters (copies)."""
        return {k: np.array(params[k]) for k in self._shapes}

    def states(self, states: States) -> dict[str, np.ndarray]:
        """Native states → canonical numpy states `{"s0": …, "s{n}": …}` (copies)."""
        with self.scope():
            canonical = self.family.to_canonical(tuple(states))
            return {f"s{n}": np.array(v) for n, v in enumerate(canonical)}

    # ---- phases

    def free_phase(self, params: Params, x, *, steps: int, start: States | None = None):
        """`steps` free steps from `start` (zeros when None); one sync at the end, for the
        residual ‖s_T − s_{T−1}‖ (0.0 when steps == 0)."""
        self._check(x, steps=steps)
        with self.scope():
            x = self._put(x)
            start = self._start(start, x.shape[0])
            if steps == 0:
                return start, 0.0
            s, residual = self._free(params, x, start, jnp.asarray(steps, jnp.int32))
            return s, float(residual)

    def ep_trace(self, params, x, y, *, start, beta, steps, symmetric=False, points=0):
        """Per-step EP traces of the nudged phase from `start` (docs/theory.md §2); holomorphic
        with `points` ≥ 2 (§2.5, `holomorphic_traces`; overrides `symmetric`)."""
        self._check(x, y, steps=steps, beta=beta)
        points = self._points(points)
        if steps == 0:
            return self._no_traces()
        with self.scope():
            x, y = self._put(x), self._put(y)
            start = self._start(start, x.shape[0])
            if not points:
                out = self._ep(params, x, y, start, float(beta), steps=steps, symmetric=symmetric)
                return self._traces(out)
            out, imag = self._holo(params, x, y, start, float(beta), steps=steps, points=points)
            check_strip(self.model, float(imag), beta=beta, points=points, where=WHERE)
            return self._traces(out)

    def _points(self, points) -> int:
        """`points` checked (`check_points`); N ≥ 2 only for a family with holomorphic EP."""
        points = check_points(points, where=WHERE)
        if points and self.family.holomorphic_phase is None:
            raise BackendError(
                f"{WHERE}: holomorphic EP runs tied fully connected models, found the "
                f"{self.family.name} family"
            )
        if points:
            check_strip(self.model, 0.0, beta=1.0, points=points, where=WHERE)  # its activation
        return points

    def bptt_trace(self, params, x, y, *, start, steps):
        """Per-step BPTT traces through `steps` steps from `start`, one backward pass."""
        self._check(x, y, steps=steps)
        if steps == 0:
            return self._no_traces()
        with self.scope():
            x, y = self._put(x), self._put(y)
            out = self._bptt(params, x, y, self._start(start, x.shape[0]), steps=steps)
            return self._traces(out)

    def ep_step(self, params, x, y, *, free_steps, steps, beta, lrs, symmetric=False, points=0):
        """Compiled whole; returns (new params, loss, errors) without waiting for the device.
        Holomorphic with `points` ≥ 2 (docs/theory.md §2.5; the family's `holomorphic_step`)."""
        self._check(x, y, free_steps=free_steps, steps=steps, beta=beta)
        points = self._points(points)
        with self.scope():
            x, y, lrs = self._host(x), self._host(y), self._rates_of(lrs)
            beta = np.asarray(beta, dtype=self.dtype)
            if points:
                self._pending = self._holo_step(
                    params, x, y, lrs, beta, free_steps=free_steps, steps=steps, points=points
                )
            else:
                self._pending = self._ep_step(
                    params, x, y, lrs, beta, free_steps=free_steps, steps=steps,
                    symmetric=symmetric,
                )  # fmt: skip
            return self._pending

    def bptt_step(self, params, x, y, *, free_steps, steps, lrs):
        """Compiled whole; returns (new params, loss, errors) without waiting for the device."""
        self._check(x, y, free_steps=free_steps, steps=steps)
        check_truncation(steps=steps, free_steps=free_steps, where=WHERE)
        with self.scope():
            x, y, lrs = self._host(x), self._host(y), self._rates_of(lrs)
            self._pending = self._bptt_step(params, x, y, lrs, free_steps=free_steps, steps=steps)
            return self._pending

    def _rtrl_gradient(self, params, x, y, *, start, steps) -> dict[str, np.ndarray]:
        """Σ_{t<K} ∇BPTT_θ(t) computed forward in time (docs/theory.md §6.3; the family's `rtrl`),
        from `start` = s_{T−K} through `steps` = K steps, compiled once per K; bound as
        `rtrl_gradient`."""
        self._check(x, y, steps=steps)
        if steps == 0:
            return {k: np.zeros(shape, dtype=self.dtype) for k, shape in self._shapes.items()}
        with self.scope():
            x, y = self._put(x), self._put(y)
            grads = self._rtrl(params, x, y, self._start(start, x.shape[0]), steps=steps)
            return {k: np.asarray(grads[k]) for k in self._shapes}

    def predict(self, params, x, *, steps) -> np.ndarray:
        """argmax of s⁰ after `steps` free steps from zero (reuses the compiled free phase)."""
        s, _ = self.free_phase(params, x, steps=steps)
        return np.asarray(s[0]).argmax(axis=1)

    def synchronize(self) -> None:
        """Block until the last dispatched call (training steps are asynchronous) has finished."""
        jax.block_until_ready(self._pending)
