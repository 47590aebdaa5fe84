"""The argument checks every backend makes, written once, with one wording (numpy only).

What comes in: the arguments of a `epbench.core.protocols.Network` call (step counts, β, a batch,
canonical parameters, learning rates) and `where`, the caller named for the message (e.g.
"torch backend"). What goes out: the checked value (an int, a float, a dict of floats) or a
`BackendError` whose message is one line, "expected …, found … (where)".

Shapes and names follow `epbench.core.params` (docs/theory.md §3.4): x is (B, inputs), y is
(B, outputs), parameters are `param_shapes(model)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec


def _fail(expected: str, found: str, where: str) -> BackendError:
    return BackendError(f"expected {expected}, found {found} ({where})")


def check_steps(name: str, value: Any, *, where: str) -> int:
    """A step count (T, K, …) named `name`: an integer ≥ 0, returned as an int."""
    integral = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integral or value < 0:
        raise _fail(f"{name} ≥ 0 (an integer)", repr(value), where)
    return int(value)


def check_truncation(*, steps: int, free_steps: int, where: str) -> None:
    """BPTT truncated to the last K = `steps` of T = `free_steps` steps needs K ≤ T."""
    if steps > free_steps:
        raise _fail(f"steps ≤ free_steps = {free_steps}", f"steps = {steps}", where)


def check_beta(beta: Any, *, where: str) -> float:
    """The nudge β of an EP call (docs/theory.md §2): finite and non-zero (its sign is kept)."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise _fail("a finite non-zero beta", repr(beta), where) from None
    if value == 0.0 or not math.isfinite(value):
        raise _fail("a finite non-zero beta", repr(beta), where)
    return value


def check_batch(model: ModelSpec, x: Any, y: Any = None, *, where: str) -> int:
    """A batch for `model`: x of shape (B, inputs) and, when given, y of shape (B, outputs), B ≥ 1
    (numpy, torch or jax arrays: only their shapes are read). Returns B."""
    shape = tuple(np.shape(x))
    if len(shape) != 2 or shape[0] < 1 or shape[1] != model.inputs:
        raise _fail(f"x of shape (B, {model.inputs})", f"shape {shape}", where)
    if y is not None:
        target = tuple(np.shape(y))
        if target != (shape[0], model.outputs):
            raise _fail(f"y of shape ({shape[0]}, {model.outputs})", f"shape {target}", where)
    return shape[0]


def check_params(model: ModelSpec, params: Mapping[str, Any], *, where: str) -> None:
    """Canonical parameters of `model`: every name of `param_shapes(model)`, each of its shape
    (further names are ignored)."""
    shapes = param_shapes(model)
    missing = [name for name in shapes if name not in params]
    if missing:
        expected = f"parameters {', '.join(shapes)}"
        raise _fail(expected, f"{', '.join(missing)} missing", where)
    for name, shape in shapes.items():
        found = tuple(np.shape(params[name]))
        if found != shape:
            raise _fail(f"parameter {name} of shape {shape}", f"shape {found}", where)


def check_lrs(model: ModelSpec, lrs: Mapping[str, Any], *, where: str) -> dict[str, float]:
    """Learning rates keyed by canonical parameter names (`epbench.core.params.learning_rates`):
    a finite number for every parameter of `model`. Returns them as floats, in parameter order."""
    names = list(param_shapes(model))
    missing = [name for name in names if name not in lrs]
    if missing:
        expected = f"a learning rate for every parameter ({', '.join(names)})"
        raise _fail(expected, f"none for {', '.join(missing)}", where)
    rates = {name: float(lrs[name]) for name in names}
    odd = [name for name, rate in rates.items() if not math.isfinite(rate)]
    if odd:
        raise _fail("finite learning rates", ", ".join(f"{n} = {rates[n]}" for n in odd), where)
    return rates
