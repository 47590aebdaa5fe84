"""What a backend implements. Protocols describe; they share no code (no inheritance).

A backend (`Backend`) builds, for a `ModelSpec`, a dtype and a device, a `Network` that runs whole
phases natively. Parameters and states stay in the backend's own arrays (opaque to the core, written
`Native` below) between calls; numpy crosses the boundary for data in and for parameters, traces and
metrics out. All settings are keyword-only.

Shapes: `x` is `(B, inputs)`, `y` is `(B, outputs)` one-hot, both numpy arrays of the network's
dtype (or the backend's own arrays). Traces are `dict[str, np.ndarray]` keyed by canonical names
(`epbench.core.params`): parameters with shape `(K, *param_shape)`, states with shape `(K,
sizes[n])`,
averaged over the batch (docs/theory.md §4). Index `t` of a trace is step `t` of docs/theory.md §2:

    EP    ΔEP_s(β, t) = (s^β_{t+1} − s^β_t) / β_eff
          ΔEP_θ(β, t) = (∂Φ/∂θ(s^β_{t+1}) − ∂Φ/∂θ(s^β_t)) / β_eff        (averaged over the batch)
          with β_eff = β in the P setting and ε·β in the EB setting, whose nudge is `εβ (y − s⁰)`
          (so the EB weight trace is (ρ(sⁿ)ρ(sⁿ⁺¹)ᵀ|_{t+1} − …|_t) / β: ε cancels).
          Symmetric: half the difference of the `+β` and `−β` traces, i.e. (Δ(+β) + Δ(−β)) / 2
          with each Δ divided by its own signed β_eff.
          Holomorphic (N points): Re (1/N) Σ_k Δ(β_k), β_k = |β| e^{2πik/N}, each Δ divided by
          its own complex β_eff (N = 2 is the symmetric estimator).
    BPTT  ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}        (= the batch mean of the per-example ∂ℓ_b/∂s)
          ∇BPTT_θ(t) = ∂L/∂θ_{T−t}           (the share through the transition into s_{T−t})
          with L = (1/2B) Σ_b ‖s⁰_{b,T} − y_b‖², computed in ONE backward pass through the last K
          steps (a per-step copy of θ, or equivalent), never K truncated runs.

The theorem (GDU) says ΔEP → −∇BPTT as β → 0 when F = ∂Φ/∂s and s_{T−K} = s_*.

Asymmetric models (`ModelSpec.feedback_angle`, independent feedback weights `B{n+1}_{n}`) have no
primitive Φ. Their EP weight traces follow the vector-field rule: each weight gets the EP change of
the layer it feeds times the activity it carries (mean of steps t and t+1), so
`ΔEP W{n}_{n+1} + ΔEP B{n+1}_{n}ᵀ` is the tied model's ∂Φ/∂θ difference; their BPTT traces are the
true per-parameter shares (W through the drive of layer n, B through that of layer n+1), and
`ep_step` / `bptt_step` update the feedback weights too (learning rate 0 freezes them).

Optional capabilities are declared protocols of their own, tested with `isinstance` (never
probed by name): `RtrlNetwork` on a network; `ReferenceBackend`, `OpTimingBackend`,
`MemoryStatsBackend`, `ProfilerBackend` and `SeedBatchingBackend` (several seeds trained as one
`SeedNetwork`) on a backend. `capabilities` lists those an object has (`epbench backends` shows
them).

What the core checks before it builds (`epbench.core.support.support_reason`): every `ModelSpec`
field that a cell sets must be in the backend's `model_fields` (an allow-list: a field added to
`ModelSpec` later makes an old backend skip the cell with that reason instead of ignoring it), and
the dtype and device are known names; then the backend's own `supports` may still refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from epbench.core.spec import ModelSpec

Native = Any
Traces = dict[str, np.ndarray]


@runtime_checkable
class Network(Protocol):
    """One model compiled by a backend for one dtype and device."""

    model: ModelSpec
    dtype: str
    device: str

    def load(self, params: dict[str, np.ndarray]) -> Native:
        """Canonical numpy parameters → the backend's parameters (copied; the input is not kept)."""
        ...

    def dump(self, params: Native) -> dict[str, np.ndarray]:
        """The backend's parameters → canonical numpy parameters (copies)."""
        ...

    def free_phase(
        self, params: Native, x: Any, *, steps: int, start: Native | None = None
    ) -> tuple[Native, float]:
        """Run `steps` free steps `s_{t+1} = F(x, s_t, θ)` from `start` (zeros when None).

        Returns the final states (native) and the residual ‖s_T − s_{T−1}‖ (Euclidean norm over all
        layers and examples; 0.0 when steps == 0). The input projection is computed once per call.
        """
        ...

    def states(self, states: Native) -> dict[str, np.ndarray]:
        """Native states → canonical numpy states `s{n}` of shape (B, sizes[n])."""
        ...

    def ep_trace(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        start: Native,
        beta: float,
        steps: int,
        symmetric: bool = False,
        points: int = 0,
    ) -> dict[str, np.ndarray]:
        """EP traces of the nudged phase (`steps` = K steps from `start` = s_*), see module doc.

        `beta` may be negative (the −β estimator); `symmetric` nudges with +|β| and −|β|;
        `points` = N ≥ 2 is holomorphic EP (docs/theory.md §2.5; it overrides `symmetric`): N
        complex nudges β_k = |β| e^{2πik/N} on complex states, the trace
        Re[(1/(N|β|)) Σ_k e^{−2πik/N} Δ(β_k)] (`epbench.core.estimators.holomorphic_phases`), a
        one-line error when the complex states leave the activation's holomorphic strip. 0: not
        holomorphic. The keyword is optional: it is only ever passed to ask for holomorphic EP.
        Keys: every parameter name and every state name.
        """
        ...

    def bptt_trace(
        self, params: Native, x: Any, y: Any, *, start: Native, steps: int
    ) -> dict[str, np.ndarray]:
        """BPTT traces through `steps` = K steps run from `start` = s_{T−K}, one backward pass.

        Keys: every parameter name and every state name, as `ep_trace`.
        """
        ...

    def ep_step(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
        symmetric: bool = False,
        points: int = 0,
    ) -> tuple[Native, Native, Native]:
        """One EP training step: free phase (`free_steps` = T), nudged phase (`steps` = K), then
        θ ← θ + lr_θ · Σ_t ΔEP_θ(β, t) = θ + lr_θ · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff.
        `symmetric` and `points` as in `ep_trace` (holomorphic: the sum of its traces).

        Returns (new params, loss, errors): the batch-mean loss ½‖s⁰_* − y‖² and the number of
        misclassified examples at the free fixed point, as 0-d native arrays (no device sync).
        """
        ...

    def bptt_step(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        lrs: dict[str, float],
    ) -> tuple[Native, Native, Native]:
        """One BPTT training step: T − K free steps without a graph, K steps with one, then
        θ ← θ − lr_θ · ∂L/∂θ (BPTT truncated to the last K steps). Returns as `ep_step`."""
        ...

    def predict(self, params: Native, x: Any, *, steps: int) -> np.ndarray:
        """Class predictions (argmax of s⁰ after `steps` free steps): numpy ints, shape (B,)."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (called by the core before it reads a clock)."""
        ...


@runtime_checkable
class RtrlNetwork(Protocol):
    """Optional network capability: RTRL (docs/theory.md §6.3)."""

    def rtrl_gradient(
        self, params: Native, x: Any, y: Any, *, start: Native, steps: int
    ) -> dict[str, np.ndarray]:
        """Σ_{t<K} ∇BPTT_θ(t) for every parameter name (shape `param_shapes`), with `start` =
        s_{T−K} and `steps` = K as in `bptt_trace`, but computed forward in time: the
        sensitivities ∂s_k/∂θ are carried through the K steps with the states (real-time
        recurrent learning, forward-mode differentiation), memory O(P · state size), independent
        of K. Must equal `bptt_trace(...)[name].sum(0)` up to rounding."""
        ...


@runtime_checkable
class ReferenceNetwork(Protocol):
    """What a re-creation of the paper's own implementation offers (`ReferenceBackend`): the
    `Network` methods a same-run speed comparison needs (epbench.measurements.reference)."""

    def load(self, params: dict[str, np.ndarray]) -> Native: ...

    def ep_step(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
    ) -> tuple[Native, Native, Native]: ...

    def bptt_step(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        lrs: dict[str, float],
    ) -> tuple[Native, Native, Native]: ...

    def synchronize(self) -> None: ...


@runtime_checkable
class ReferenceBackend(Protocol):
    """Optional backend capability: the paper's implementation re-created, as a yardstick."""

    def reference_network(
        self, model: ModelSpec, *, dtype: str, device: str
    ) -> ReferenceNetwork | None:
        """The model computed the way the paper's implementation computes it, or None when the
        backend has no re-creation for `model`."""
        ...


@runtime_checkable
class OpTimingBackend(Protocol):
    """Optional backend capability: the steady-state time of one primitive op (the FLOP limit
    of epbench.measurements.peak)."""

    def op_seconds(
        self, op: tuple, *, dtype: str, device: str, min_seconds: float = 0.01
    ) -> float | None:
        """Seconds of one `op` (`epbench.core.flops` op tuple) on `device` in `dtype`; None for
        an op kind the backend cannot time."""
        ...


@runtime_checkable
class MemoryStatsBackend(Protocol):
    """Optional backend capability: the device allocator's statistics."""

    def memory_stats(self, device: str, *, reset: bool = False) -> dict[str, Any] | None:
        """{"current_bytes", "peak_bytes", "resettable"} of `device`'s allocator (the peak since
        the last reset), reset afterwards when `reset`; None where there is none (the CPU)."""
        ...


@runtime_checkable
class ProfilerBackend(Protocol):
    """Optional backend capability: a framework profiler's summary of a call."""

    def profile_summary(self, fn: Callable[[], Any], *, device: str, folder: Path) -> str:
        """Run `fn()` under the framework's profiler; its per-op table (also written under
        `folder`)."""
        ...


@runtime_checkable
class SeedNetwork(Protocol):
    """Several seeds of one model trained as one network: every parameter, batch, β, loss and
    error count carries a leading seed axis of length `seeds` (what `SeedBatchingBackend` builds).
    Seed i of a batched step computes what `Network.ep_step` / `bptt_step` computes for seed i
    alone (the same update rules, docs/theory.md §2 and §5), so a batched run's records equal a
    sequential run's up to rounding."""

    model: ModelSpec
    dtype: str
    device: str
    seeds: int

    def load(self, params: Sequence[dict[str, np.ndarray]]) -> Native:
        """One canonical parameter dict per seed → the stacked native parameters."""
        ...

    def dump(self, params: Native) -> list[dict[str, np.ndarray]]:
        """Stacked native parameters → one canonical numpy dict per seed (copies)."""
        ...

    def ep_step(
        self,
        params: Native,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: Sequence[float],
        lrs: dict[str, float],
        **estimator: Any,
    ) -> tuple[Native, Native, Native]:
        """`Network.ep_step` of every seed at once: x of shape (S, B, inputs), y (S, B, outputs),
        one β per seed; `estimator` the keywords `Network.ep_step` takes after `lrs`. Returns
        (new params, losses (S,), error counts (S,)) as native arrays (no device sync)."""
        ...

    def bptt_step(
        self, params: Native, x: Any, y: Any, *, free_steps: int, steps: int, lrs: dict[str, float]
    ) -> tuple[Native, Native, Native]:
        """`Network.bptt_step` of every seed at once; shapes as `ep_step`."""
        ...

    def predict(self, params: Native, x: Any, *, steps: int) -> np.ndarray:
        """Every seed's class predictions on the same batch x (B, inputs): shape (S, B)."""
        ...

    def residuals(self, params: Native, x: Any, *, steps: int) -> np.ndarray:
        """Every seed's free-phase residual ‖s_T − s_{T−1}‖ on the batch x (B, inputs): (S,)."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work."""
        ...


@runtime_checkable
class SeedBatchingBackend(Protocol):
    """Optional backend capability: train the seeds of a cell as one batched network."""

    def build_seeds(
        self, model: ModelSpec, *, dtype: str, device: str, seeds: int
    ) -> SeedNetwork | None:
        """A `SeedNetwork` of `seeds` ≥ 2 seeds, or None where this backend does not batch
        seeds for `model` (its family cannot, or batching does not pay): the seeds then run one
        after the other."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A framework plugin. Registered through the `epbench_register_backends` hook."""

    name: str
    model_fields: frozenset[str]  # the `ModelSpec` fields `build` understands (an allow-list)

    def versions(self) -> dict[str, str]:
        """Framework versions for records, e.g. {"torch": "2.13.0"}."""
        ...

    def device_info(self, device: str) -> str:
        """A human description of `device` (CPU model or GPU name), for records."""
        ...

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        """None when `build` can run this combination; otherwise the reason it cannot (a skip).
        Called after the core's own checks (`epbench.core.support.support_reason`)."""
        ...

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> Network:
        """Compile `model` for `dtype` ("float32" | "float64") and `device` ("cpu" | "cuda")."""
        ...


@runtime_checkable
class FlowNetwork(Protocol):
    """Optional network capability: the linearised free dynamics (docs/theory.md §6.4), for the
    spectral radius of the `gradient-flow` measurement (epbench.measurements.gradient_flow)."""

    def state_jvp(
        self, params: Native, x: Any, *, at: Native, tangent: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """J·v with J = ∂F/∂s (x, s, θ) at s = `at` (native states, e.g. from `free_phase`), the
        Jacobian of one free step s_{t+1} = F(x, s_t, θ), applied to `tangent`. The tangent and
        the result are canonical states (`s{n}`, the shapes of `states`); J is block diagonal
        over the batch (each example's dynamics are its own)."""
        ...


NETWORK_CAPABILITIES: dict[str, type] = {"rtrl": RtrlNetwork, "flow": FlowNetwork}
BACKEND_CAPABILITIES: dict[str, type] = {
    "reference": ReferenceBackend,
    "op-timing": OpTimingBackend,
    "memory-stats": MemoryStatsBackend,
    "profiler": ProfilerBackend,
    "seed-batching": SeedBatchingBackend,
}


def capabilities(thing: object) -> tuple[str, ...]:
    """The names of the optional capabilities `thing` (a backend or a network) implements."""
    table = {**BACKEND_CAPABILITIES, **NETWORK_CAPABILITIES}
    return tuple(name for name, proto in table.items() if isinstance(thing, proto))
