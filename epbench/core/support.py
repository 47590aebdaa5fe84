"""Whether a backend can run a model: the core's allow-list check, then the backend's own.

What comes in: a `Backend` (epbench.core.protocols), a `ModelSpec`, a dtype and a device name.
What goes out: None when the backend can build the model, else the one-line reason (a skip).
`estimator_reason` adds what the estimator needs of the model (holomorphic EP: complex states).
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from epbench.core.protocols import Backend
from epbench.core.spec import DEVICES, DTYPES, DynamicsSpec, ModelSpec

HOLOMORPHIC_ACTIVATIONS = ("tanh", "sigm")  # analytic in a strip around the real axis


def set_fields(model: ModelSpec) -> tuple[str, ...]:
    """The `ModelSpec` fields `model` sets: those without a default, and those whose value is not
    the default."""
    out = []
    for field in fields(model):
        value = getattr(model, field.name)
        if field.default is MISSING or value != field.default:
            out.append(field.name)
    return tuple(out)


def support_reason(backend: Backend, model: ModelSpec, *, dtype: str, device: str) -> str | None:
    """None when `backend` can build `model` for `dtype` on `device`; else why not."""
    if dtype not in DTYPES:
        return f"expected a dtype in {', '.join(DTYPES)}, found {dtype!r}"
    if device not in DEVICES:
        return f"expected a device in {', '.join(DEVICES)}, found {device!r}"
    unknown = [name for name in set_fields(model) if name not in backend.model_fields]
    if unknown:
        return (
            f"{backend.name} backend does not declare the model field(s) "
            f"{', '.join(f'ModelSpec.{name}' for name in unknown)} in its model_fields"
        )
    reason = backend.supports(model, dtype=dtype, device=device)
    return None if not reason else str(reason)


def estimator_reason(model: ModelSpec, dynamics: DynamicsSpec) -> str | None:
    """None when `dynamics.estimator` can run on `model`; else why not (a skip).

    Holomorphic EP (docs/theory.md §2.5) runs the dynamics at complex β, so ρ must be holomorphic
    around the real axis (tanh, sigm; not the hard sigmoid) and there is no clamp to [0, 1]; the
    backends run it for the tied fully connected family (no conv layers, no feedback angle)."""
    if dynamics.estimator != "holomorphic":
        return None
    if model.activation not in HOLOMORPHIC_ACTIVATIONS:
        return (
            f"holomorphic EP needs a holomorphic activation "
            f"({', '.join(HOLOMORPHIC_ACTIVATIONS)}), found {model.activation}"
        )
    if model.clamp:
        return "holomorphic EP needs unclamped states, found model.clamp = true"
    if model.conv is not None or model.feedback_angle is not None:
        return "holomorphic EP runs tied fully connected models (no conv layers, no feedback angle)"
    return None
