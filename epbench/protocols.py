"""What a backend implements. Protocols describe; they share no code (no inheritance).

A backend (`Backend`) builds, for a `ModelSpec`, a dtype and a device, a `Network` that runs whole
phases natively. Parameters and states stay in the backend's own arrays (opaque to the core, written
`Native` below) between calls; numpy crosses the boundary for data in and for parameters, traces and
metrics out. All settings are keyword-only.

Shapes: `x` is `(B, inputs)`, `y` is `(B, outputs)` one-hot, both numpy arrays of the network's
dtype (or the backend's own arrays). Traces are `dict[str, np.ndarray]` keyed by canonical names
(`epbench.params`): parameters with shape `(K, *param_shape)`, states with shape `(K, sizes[n])`,
averaged over the batch (PAPER.md §4). Index `t` of a trace is step `t` of PAPER.md §2:

    EP    ΔEP_s(β, t) = (s^β_{t+1} − s^β_t) / β_eff
          ΔEP_θ(β, t) = (∂Φ/∂θ(s^β_{t+1}) − ∂Φ/∂θ(s^β_t)) / β_eff        (averaged over the batch)
          with β_eff = β in the P setting and ε·β in the EB setting, whose nudge is `εβ (y − s⁰)`
          (so the EB weight trace is (ρ(sⁿ)ρ(sⁿ⁺¹)ᵀ|_{t+1} − …|_t) / β: ε cancels).
          Symmetric: half the difference of the `+β` and `−β` traces, i.e. (Δ(+β) + Δ(−β)) / 2
          with each Δ divided by its own signed β_eff.
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

Optional methods (`RtrlNetwork`): `rtrl_gradient` gives Σ_t ∇BPTT_θ(t), the gradient of BPTT
truncated to the last K steps, computed forward in time (RTRL, PAPER.md §6.3). The core checks
`hasattr(network, "rtrl_gradient")` before using it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .spec import ModelSpec

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
    ) -> dict[str, np.ndarray]:
        """EP traces of the nudged phase (`steps` = K steps from `start` = s_*), see module doc.

        `beta` may be negative (the −β estimator); `symmetric` nudges with +|β| and −|β|.
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
    ) -> tuple[Native, Native, Native]:
        """One EP training step: free phase (`free_steps` = T), nudged phase (`steps` = K), then
        θ ← θ + lr_θ · Σ_t ΔEP_θ(β, t) = θ + lr_θ · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff.

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
    """The optional RTRL method a `Network` may add (PAPER.md §6.3)."""

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
class Backend(Protocol):
    """A framework plugin. Registered through the `epbench_register_backends` hook."""

    name: str

    def versions(self) -> dict[str, str]:
        """Framework versions for records, e.g. {"torch": "2.13.0"}."""
        ...

    def device_info(self, device: str) -> str:
        """A human description of `device` (CPU model or GPU name), for records."""
        ...

    def unsupported(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        """None when `build` can run this combination; otherwise the reason it cannot (a skip)."""
        ...

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> Network:
        """Compile `model` for `dtype` ("float32" | "float64") and `device` ("cpu" | "cuda")."""
        ...
