"""Paired statistics of EP against BPTT over seeds: the difference's confidence interval and an
equivalence test (docs/theory.md §5.1).

What comes in: the paired differences d_i = EP_i − BPTT_i of one quantity (a final test error in
percent points), one per seed — EP and BPTT of a seed start from the same weights and see the same
mini-batches, so the pairing removes what the seed does to both. What goes out: a `Paired`
summary: n, mean, sample std, the two-sided t-interval at `level`, the p-value of the t-test of
"no difference", and the two one-sided t-tests (TOST) of equivalence within ±`margin`:

    H0⁻: mean ≤ −margin  against  mean > −margin     p⁻ = P(T ≥ (d̄ + margin) / se)
    H0⁺: mean ≥ +margin  against  mean < +margin     p⁺ = P(T ≤ (d̄ − margin) / se)

T Student's t with n − 1 degrees of freedom, se = s / √n. Equivalence is shown at level α when
both reject, p_TOST = max(p⁻, p⁺) < α — the same as the (1 − 2α) interval lying inside ±margin.
The verdict: *equivalent* (TOST rejects), else *different* (the t-test rejects "no difference"),
else *not shown* (too few seeds or too much spread to say either). Fewer than two seeds have no
t-statistic: *not shown*, with the reason; identical differences (no spread) are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MARGIN = 0.3  # percent points of test error: what "EP trains as well as BPTT" allows
ALPHA = 0.05
VERDICTS = ("equivalent", "different", "not shown")


@dataclass(frozen=True, kw_only=True)
class Paired:
    """The statistics of paired differences (module doc). Fields are None where they are not
    defined (n < 2)."""

    n: int
    mean: float | None
    std: float | None
    low: float | None  # the two-sided (1 − α) t-interval of the mean difference
    high: float | None
    p_difference: float | None  # two-sided t-test of mean = 0
    p_equivalence: float | None  # TOST: max(p⁻, p⁺)
    margin: float
    verdict: str
    why: str = ""


def paired(differences: Sequence[float], *, margin: float = DEFAULT_MARGIN) -> Paired:
    """`Paired` statistics of `differences` at level ALPHA with equivalence margin ±`margin`."""
    from scipy import stats  # imported here: only tables with seeds need it

    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin: expected a finite number > 0, found {margin!r}")
    d = [float(v) for v in differences]
    n = len(d)
    mean = sum(d) / n if n else None
    if n < 2:
        return Paired(n=n, mean=mean, std=None, low=None, high=None, p_difference=None,
                      p_equivalence=None, margin=margin, verdict="not shown",
                      why="fewer than two seeds")  # fmt: skip
    assert mean is not None
    std = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    se, df = std / math.sqrt(n), n - 1
    if se == 0.0:  # every seed the same difference: exact, no t-statistic needed
        inside = abs(mean) < margin
        return Paired(n=n, mean=mean, std=0.0, low=mean, high=mean,
                      p_difference=1.0 if mean == 0 else 0.0,
                      p_equivalence=0.0 if inside else 1.0, margin=margin,
                      verdict="equivalent" if inside else "different")  # fmt: skip
    half = stats.t.ppf(1 - ALPHA / 2, df) * se
    p_difference = float(2 * stats.t.sf(abs(mean) / se, df))
    p_lower = float(stats.t.sf((mean + margin) / se, df))
    p_upper = float(stats.t.cdf((mean - margin) / se, df))
    p_equivalence = max(p_lower, p_upper)
    if p_equivalence < ALPHA:
        verdict = "equivalent"
    elif p_difference < ALPHA:
        verdict = "different"
    else:
        verdict = "not shown"
    return Paired(n=n, mean=mean, std=std, low=mean - half, high=mean + half,
                  p_difference=p_difference, p_equivalence=p_equivalence, margin=margin,
                  verdict=verdict)  # fmt: skip


def describe(result: Paired, fmt: str = "+.2f") -> str:
    """`mean [low, high]` of the difference, or `mean` alone (n < 2), or — (n = 0)."""
    if result.mean is None:
        return "—"
    if result.low is None or result.high is None:
        return format(result.mean, fmt)
    return f"{format(result.mean, fmt)} [{format(result.low, fmt)}, {format(result.high, fmt)}]"
