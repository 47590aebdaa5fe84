"""The torch backend's `epbench.core.protocols.Network`: one model family's pure phase functions
behind the protocol's methods.

A model family is a module of pure functions that take the `ModelSpec` first — `network` (tied,
fully connected), `asymmetric` (independent feedback weights), `conv` (P-conv) — bundled as a
`Family`. They take tensors of the network's dtype and device (x as (B, inputs), native states)
and give tensors back:

    free_phase(model, params, x, s, steps)                    → (s_T, s_{T−1})     (no graph)
    ep_traces(model, params, x, y, start, beta, steps, symmetric)      → per-step EP traces
                                                 (β may be complex: complex tensors throughout)
    bptt_traces(model, params, x, y, start, steps)                     → per-step BPTT traces
    ep_step(model, params, x, y, lrs, beta, *, free_steps, steps, symmetric, points)
                                                                    → (θ', loss, errors)
    bptt_step(model, params, x, y, lrs, *, free_steps, steps)                → (θ', loss, errors)
    rtrl(model, params, x, y, start, steps)        → Σ_t ∇BPTT_θ(t) (docs/theory.md §6.3), or None

Traces come back keyed by canonical names (`epbench.core.params`), as tensors; training steps
update the parameter tensors in place and return the same dict, the loss and the error count as
0-d tensors (no device sync). A family may hold states in another memory layout (`to_native`;
P-conv: channels-last).

`TorchNetwork` does the rest once for every family: the dtype and device conversions (`like`,
`tensors`), the argument checks (`epbench.core.validate`), the learning-rate lookup, zero starts,
the residual, the traces as numpy in canonical order, full-precision cuDNN (no TF32, so that
backends agree) and `synchronize`. It offers `rtrl_gradient` (`epbench.core.protocols.RtrlNetwork`)
exactly when its family has an `rtrl` function. Holomorphic EP (`points` ≥ 2, docs/theory.md §2.5)
runs the family's one-sided traces once per phase of `epbench.core.estimators.holomorphic_phases`,
on complex copies of the tensors for a complex β_k (`complex_copy`), and keeps the real part of
their weighted sum; a family offers it with a `holomorphic_phase` function (the tied fully
connected one): the traces of one complex β and the largest |Im| of ρ's argument on the way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from epbench.core.errors import BackendError
from epbench.core.estimators import holomorphic_phases
from epbench.core.holomorphic import STRIP, check_points, check_strip
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

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
WHERE = "torch backend"

# The one place a dtype name becomes a torch dtype.
TORCH_DTYPES = MappingProxyType({"float32": torch.float32, "float64": torch.float64})
COMPLEX_DTYPES = MappingProxyType({torch.float32: torch.complex64, torch.float64: torch.complex128})


def like(dtype: str, device: str) -> dict[str, Any]:
    """The keyword arguments that make tensors of `dtype` ("float32" | "float64") on `device`."""
    return {"dtype": TORCH_DTYPES[dtype], "device": torch.device(device)}


def numpy_dtype(t: torch.Tensor) -> str:
    """The dtype name (and numpy dtype) of a float tensor."""
    return next(name for name, dtype in TORCH_DTYPES.items() if dtype == t.dtype)


def tensors(params: Mapping[str, Any], names: Iterable[str], kind: dict[str, Any]) -> Params:
    """Copies of `params[name]` (numpy or tensors) as tensors of `kind` (`like`)."""
    return {name: torch.tensor(np.asarray(params[name]), **kind) for name in names}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA `device`; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nudges(beta: float | complex, *, symmetric: bool) -> tuple[float | complex, ...]:
    """The signed β of each nudged phase: (β,), or (|β|, −|β|) for the symmetric estimator; a
    complex β (one phase of holomorphic EP) is kept complex."""
    if symmetric:
        return (abs(beta), -abs(beta))
    return (beta if isinstance(beta, complex) else float(beta),)


def complex_copy(tensors: Any) -> Any:
    """A tensor, or a tuple / list / dict of them, as complex tensors of the matching precision
    (`COMPLEX_DTYPES`): the inputs of a nudged phase at a complex β. None stays None."""
    if tensors is None:
        return None
    if isinstance(tensors, dict):
        return {k: complex_copy(v) for k, v in tensors.items()}
    if isinstance(tensors, (tuple, list)):
        return type(tensors)(complex_copy(v) for v in tensors)
    return tensors.to(COMPLEX_DTYPES.get(tensors.dtype, tensors.dtype))


def argument_imag(model: ModelSpec, states: Iterable[torch.Tensor]) -> float:
    """The largest |Im| of ρ's argument over complex `states` (epbench.core.holomorphic): the
    state itself in EB; in P the drive h of the hidden layers, from s = ρ(h) by the principal
    logarithm (tanh: h = ½ log((1+s)/(1−s)), sigm: h = ½ + ¼ log(s/(1−s)))."""
    states = [s for s in states if s.is_complex()]
    if not states:
        return 0.0
    if model.setting == "EB":  # (torch's max keeps a NaN: a diverged phase is refused too)
        return float(torch.stack([s.imag.abs().max() for s in states]).max())
    half = STRIP[model.activation] / torch.pi  # Im h = half · arg(…)
    ratio = (lambda s: (1 + s) / (1 - s)) if model.activation == "tanh" else (lambda s: s / (1 - s))
    return float(torch.stack([torch.angle(ratio(s)).abs().max() for s in states]).max() * half)


def loss_errors(s0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean ½‖s⁰ − y‖² and the number of argmax mismatches, as 0-d tensors (no sync)."""
    loss = 0.5 * ((s0 - y) ** 2).sum(1).mean()
    errors = (s0.argmax(1) != y.argmax(1)).sum()
    return loss, errors


def graph_loss(s0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/2B) Σ_b ‖s⁰_b − y_b‖² (docs/theory.md §2), the loss BPTT differentiates.

    Divided by 2B, not multiplied by 0.5 (the same numbers, ½ being exact): under
    `torch.func.jacfwd` (torch 2.13) a Python float times a tensor promotes float32 tangents to
    float64."""
    return ((s0 - y) ** 2).sum() / (2 * y.shape[0])


def empty(shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    """An uninitialised trace buffer of `ref`'s dtype and device. On the CPU its memory comes from
    numpy (and goes back as the trace without a copy), whose allocator asks for huge pages:
    faulting in 4 KiB pages dominated the cost of large traces ((K, 512, 784) float64 is 257 MB;
    1.5-2× faster)."""
    if ref.device.type == "cpu" and not ref.is_complex():
        return torch.from_numpy(np.empty(shape, dtype=numpy_dtype(ref)))
    return torch.empty(shape, dtype=ref.dtype, device=ref.device)


def _same(s: States) -> States:
    return s


@dataclass(frozen=True)
class Family:
    """The pure functions of one model family (module doc) and the check of what it can run."""

    name: str
    unsupported: Callable[[ModelSpec], str | None]  # why `model` is not of this family, or None
    free_phase: Callable
    ep_traces: Callable
    bptt_traces: Callable
    ep_step: Callable
    bptt_step: Callable
    rtrl: Callable | None = None
    # (traces, max |Im| of ρ's argument) of one complex β; None: no holomorphic EP
    holomorphic_phase: Callable | None = None
    to_native: Callable[[States], States] = _same  # canonical-shaped tensors → native states


class TorchNetwork:
    """One model of one family for one torch dtype and device (implements
    `epbench.core.protocols.Network`, and `RtrlNetwork` when the family has `rtrl`).

    Native parameters: a dict of tensors keyed by canonical names; native states: a tuple of
    tensors, canonical shapes in the family's memory layout. A `start` may be numpy arrays or
    tensors (converted without a copy when they already are this network's).
    """

    def __init__(self, model: ModelSpec, *, family: Family, dtype: str, device: str) -> None:
        reason = family.unsupported(model)
        if reason is not None:
            raise BackendError(f"{WHERE}: {reason}")
        self.model, self.family, self.dtype, self.device = model, family, dtype, device
        self._like = like(dtype, device)
        self._shapes = param_shapes(model)
        self._state_shapes = {k: v[1:] for k, v in state_shapes(model, 1).items()}
        self._rates: tuple[dict, dict[str, float]] | None = None  # the last `lrs`, checked
        if family.rtrl is not None:  # the optional capability, only where the family has it
            self.rtrl_gradient = self._rtrl_gradient

    # ---- conversions

    def _tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, **self._like)

    def _native(self, start: Any, batch: int) -> States:
        """Native states: zeros when `start` is None, else `start` converted to this network's."""
        if start is None:
            shapes = self._state_shapes.values()
            start = [torch.zeros(batch, *shape, **self._like) for shape in shapes]
        return self.family.to_native(tuple(self._tensor(v) for v in start))

    def _rates_of(self, lrs: Mapping[str, float]) -> dict[str, float]:
        """`lrs` checked (`check_lrs`) and as floats, once per distinct `lrs`."""
        if self._rates is None or self._rates[0] != lrs:
            self._rates = dict(lrs), check_lrs(self.model, lrs, where=WHERE)
        return self._rates[1]

    def _batch(self, x: Any, y: Any = None) -> tuple[torch.Tensor, ...]:
        check_batch(self.model, x, y, where=WHERE)
        return (self._tensor(x),) if y is None else (self._tensor(x), self._tensor(y))

    def _numpy(self, out: Mapping[str, torch.Tensor], steps: int) -> dict[str, np.ndarray]:
        """Traces in canonical order (parameters, then states) as numpy arrays: no copy on the CPU
        (see `empty`), one copy into a numpy buffer from a GPU; zeros for a name not in `out`."""
        result = {}
        for name, shape in (self._shapes | self._state_shapes).items():
            if name not in out:  # steps == 0
                result[name] = np.zeros((steps, *shape), dtype=self.dtype)
            elif out[name].device.type == "cpu":
                result[name] = out[name].numpy()
            else:
                result[name] = np.empty(tuple(out[name].shape), dtype=self.dtype)
                torch.from_numpy(result[name]).copy_(out[name])
        return result

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """No TF32 in cuDNN convolutions on CUDA (on by default in torch): backends must agree."""
        if self._like["device"].type != "cuda":
            yield
            return
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → tensors of this dtype and device (copies)."""
        check_params(self.model, params, where=WHERE)
        return tensors(params, self._shapes, self._like)

    def dump(self, params: Params) -> dict[str, np.ndarray]:
        """Torch parameters → canonical numpy parameters (copies)."""
        return {name: params[name].detach().cpu().numpy().copy() for name in self._shapes}

    def states(self, states: States) -> dict[str, np.ndarray]:
        """Native states → canonical numpy states `{"s{n}": (B, …)}` (copies)."""
        return {f"s{n}": s.detach().cpu().numpy().copy() for n, s in enumerate(states)}

    # ---- phases

    def free_phase(
        self, params: Params, x: Any, *, steps: int, start: States | None = None
    ) -> tuple[States, float]:
        """`steps` free steps from `start` (zeros when None), docs/theory.md §1. Returns
        (s_T, ‖s_T − s_{T−1}‖), 0.0 for no steps; one device sync, for the residual."""
        steps = check_steps("steps", steps, where=WHERE)
        (x,) = self._batch(x)
        with torch.no_grad(), self._scope():
            s = self._native(start, x.shape[0])
            s, prev = self.family.free_phase(self.model, params, x, s, steps)
            if steps == 0:
                return s, 0.0
            residual = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(s, prev, strict=True)))
        return s, float(residual)

    def ep_trace(self, params, x, y, *, start, beta, steps, symmetric=False, points=0):
        """EP traces ΔEP_s(β, t), ΔEP_θ(β, t) for t < K from `start` = s_* (docs/theory.md §2;
        epbench.core.protocols); symmetric: (Δ(+|β|) + Δ(−|β|)) / 2; `points` = N ≥ 2:
        holomorphic, Re Σ_k w_k Δ(β_k) over `holomorphic_phases` (§2.5)."""
        steps = check_steps("steps", steps, where=WHERE)
        beta = check_beta(beta, where=WHERE)
        points = self._points(points)
        x, y = self._batch(x, y)
        if steps == 0:
            return self._numpy({}, 0)
        with torch.no_grad(), self._scope():
            s = self._native(start, x.shape[0])
            if points:
                out = self._holomorphic_traces(params, x, y, s, beta, steps, points)
            else:
                out = self.family.ep_traces(self.model, params, x, y, s, beta, steps, symmetric)
        return self._numpy(out, steps)

    def _points(self, points: Any) -> int:
        """`points` checked (`check_points`); N ≥ 2 only for a family that runs complex β."""
        points = check_points(points, where=WHERE)
        if points and self.family.holomorphic_phase is None:
            raise BackendError(
                f"{WHERE}: holomorphic EP runs tied fully connected models, found the "
                f"{self.family.name} family"
            )
        if points:
            check_strip(self.model, 0.0, beta=1.0, points=points, where=WHERE)  # its activation
        return points

    def _holomorphic_traces(self, params, x, y, s, beta, steps, points) -> Params:
        """Re Σ_k w_k Δ(β_k) (`holomorphic_phases`): the family's one-sided traces per phase, on
        complex copies for a complex β_k; each Δ(β_k) is divided by its own β_k by the family.
        Raises when a phase leaves ρ's holomorphic strip (`check_strip`)."""
        out: Params = {}
        imag = 0.0
        for b, w in holomorphic_phases(beta, points):
            if isinstance(b, complex):
                args = complex_copy((params, x, y, s))
                part, im = self.family.holomorphic_phase(self.model, *args, b, steps)
                imag = max(imag, im) if math.isfinite(im) else math.inf
            else:
                part = self.family.ep_traces(self.model, params, x, y, s, b, steps, False)
            for name, v in part.items():
                term = v.real * w
                out[name] = term if name not in out else out[name].add_(term)
        check_strip(self.model, imag, beta=beta, points=points, where=WHERE)
        return out

    def bptt_trace(self, params, x, y, *, start, steps):
        """BPTT traces ∇BPTT_s(t), ∇BPTT_θ(t) for t < K, one backward pass through the K steps
        from `start` = s_{T−K} (docs/theory.md §2)."""
        steps = check_steps("steps", steps, where=WHERE)
        x, y = self._batch(x, y)
        if steps == 0:
            return self._numpy({}, 0)
        with self._scope():
            s = tuple(v.detach() for v in self._native(start, x.shape[0]))
            out = self.family.bptt_traces(self.model, params, x, y, s, steps)
        return self._numpy(out, steps)

    def _rtrl_gradient(self, params, x, y, *, start, steps) -> dict[str, np.ndarray]:
        """Σ_{t<K} ∇BPTT_θ(t) computed forward in time (docs/theory.md §6.3; the family's `rtrl`),
        from `start` = s_{T−K} through `steps` = K steps; bound as `rtrl_gradient`."""
        steps = check_steps("steps", steps, where=WHERE)
        x, y = self._batch(x, y)
        if steps == 0:
            return {k: np.zeros(shape, dtype=self.dtype) for k, shape in self._shapes.items()}
        s = tuple(v.detach() for v in self._native(start, x.shape[0]))
        theta = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            grads = self.family.rtrl(self.model, theta, x, y, s, steps)
        return {k: grads[k].cpu().numpy() for k in self._shapes}

    # ---- training

    def ep_step(self, params, x, y, *, free_steps, steps, beta, lrs, symmetric=False, points=0):
        """One EP step (docs/theory.md §2), `params` updated in place: θ ← θ + lr · Σ_t ΔEP_θ(β, t)
        (holomorphic with `points` ≥ 2, §2.5). Returns (params, loss, errors) without waiting
        for the device."""
        free_steps = check_steps("free_steps", free_steps, where=WHERE)
        steps = check_steps("steps", steps, where=WHERE)
        beta = check_beta(beta, where=WHERE)
        points = self._points(points)
        rates = self._rates_of(lrs)
        x, y = self._batch(x, y)
        extra = {"points": points} if points else {}
        with torch.no_grad(), self._scope():
            return self.family.ep_step(
                self.model, params, x, y, rates, beta,
                free_steps=free_steps, steps=steps, symmetric=symmetric, **extra,
            )  # fmt: skip

    def bptt_step(self, params, x, y, *, free_steps, steps, lrs):
        """One BPTT step: T − K free steps without a graph, K with one, θ ← θ − lr · ∂L/∂θ,
        `params` updated in place. Returns (params, loss, errors) without waiting for the device."""
        free_steps = check_steps("free_steps", free_steps, where=WHERE)
        steps = check_steps("steps", steps, where=WHERE)
        check_truncation(steps=steps, free_steps=free_steps, where=WHERE)
        rates = self._rates_of(lrs)
        x, y = self._batch(x, y)
        with self._scope():
            return self.family.bptt_step(
                self.model, params, x, y, rates, free_steps=free_steps, steps=steps
            )

    def predict(self, params: Params, x: Any, *, steps: int) -> np.ndarray:
        """argmax of s⁰ after `steps` free steps from zero, numpy int array (B,)."""
        steps = check_steps("steps", steps, where=WHERE)
        (x,) = self._batch(x)
        with torch.no_grad(), self._scope():
            s, _ = self.family.free_phase(self.model, params, x, self._native(None, len(x)), steps)
        return s[0].argmax(1).cpu().numpy()

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""
        synchronize(self._like["device"])
