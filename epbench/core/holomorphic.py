"""What every backend checks of holomorphic EP (docs/theory.md §2.5): its point count, and that
the complex states stay where the activation is holomorphic.

What comes in: the `points` keyword of `Network.ep_trace` / `ep_step`; the model and the largest
imaginary part of an activation argument that a backend's complex nudged phases reached.
What goes out: the checked point count, or a `BackendError` with a one-line reason.

ρ(z) = tanh z has poles at Im z = ±π/2 and sigm(z) = 1 / (1 + e^{−4(z−½)}) at Im z = ±π/4
(`STRIP`, the half-width of the strip around the real axis where ρ is holomorphic). The argument
is the state s in the EB setting (ρ(s)) and the drive h in the P setting (s = ρ(h), recovered on
the hidden layers from s by the principal logarithm, which is exact inside the strip). A nudge
whose phases take |Im| to `STRIP_FRACTION` of the half-width or beyond is refused: near a pole
the circle of nudges no longer encloses only a holomorphic region, and the Fourier coefficient
would be silently wrong.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from epbench.core.errors import BackendError
from epbench.core.spec import ModelSpec

STRIP = MappingProxyType({"tanh": math.pi / 2, "sigm": math.pi / 4})
STRIP_FRACTION = 0.75


def check_points(points: Any, *, where: str) -> int:
    """`points` as an int: 0 (not holomorphic) or N ≥ 2; else a one-line BackendError."""
    if isinstance(points, bool) or not isinstance(points, int) or points == 1 or points < 0:
        raise BackendError(
            f"{where}: expected holomorphic points N ≥ 2 (an integer; 0 = not holomorphic), "
            f"found {points!r}"
        )
    return int(points)


def check_strip(model: ModelSpec, imag: float, *, beta: float, points: int, where: str) -> None:
    """Raise when `imag`, the largest |Im| of an activation argument over the complex nudged
    phases, reaches `STRIP_FRACTION` of `model.activation`'s strip (module doc)."""
    limit = STRIP.get(model.activation)
    if limit is None:
        raise BackendError(
            f"{where}: holomorphic EP needs a holomorphic activation ({', '.join(STRIP)}), "
            f"found {model.activation}"
        )
    if not math.isfinite(imag) or imag >= STRIP_FRACTION * limit:
        raise BackendError(
            f"{where}: holomorphic EP with |β| = {abs(beta):g}, N = {points} takes the complex "
            f"states to |Im| = {imag:.3g} of {model.activation}'s argument, beyond "
            f"{STRIP_FRACTION:g} of its holomorphic strip |Im| < {limit:.4g}: use a smaller |β|"
        )
