"""Whether a backend can run a model: the core's allow-list check, then the backend's own.

What comes in: a `Backend` (epbench.core.protocols), a `ModelSpec`, a dtype and a device name.
What goes out: None when the backend can build the model, else the one-line reason (a skip).
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from epbench.core.protocols import Backend
from epbench.core.spec import DEVICES, DTYPES, ModelSpec


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
