"""The paired statistics of EP against BPTT, checked against a textbook example.

Student's sleep data (Cushny and Peebles, 1905; Student, 1908): the extra hours of sleep of ten
patients under two drugs, paired by patient. The differences (drug 2 − drug 1) are
1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4: mean 1.58, t = 4.0621 on 9 degrees of freedom,
two-sided p = 0.002833, 95 % interval [0.7001, 2.4599] — the figures every statistics package
prints for this data set (R: `t.test(extra ~ group, data = sleep, paired = TRUE)`).
"""

from __future__ import annotations

import math

import pytest

from epbench.views.equivalence import paired

SLEEP = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]


def test_the_t_interval_and_p_value_of_the_sleep_data() -> None:
    result = paired(SLEEP, margin=10.0)
    assert result.n == 10 and result.mean == pytest.approx(1.58)
    assert result.std == pytest.approx(1.229995, abs=1e-6)
    assert result.low == pytest.approx(0.7001142, abs=1e-6)
    assert result.high == pytest.approx(2.4598858, abs=1e-6)
    assert result.p_difference == pytest.approx(0.002833, abs=1e-6)


def test_tost_agrees_with_the_90_percent_interval() -> None:
    # TOST at α = 0.05 rejects exactly when the 90 % interval, 1.58 ∓ 1.8331 · 0.38896 =
    # [0.8670, 2.2930], lies inside ±margin.
    se = 1.229995 / math.sqrt(10)
    assert paired(SLEEP, margin=2.30).verdict == "equivalent"
    assert paired(SLEEP, margin=2.28).verdict == "different"  # and the t-test rejects 0
    # The TOST p-value is the larger one-sided p: at margin 2.0, P(T ≤ (1.58 − 2) / se).
    from scipy import stats

    assert paired(SLEEP, margin=2.0).p_equivalence == pytest.approx(
        float(stats.t.cdf((1.58 - 2.0) / se, 9)), rel=1e-6
    )
    assert paired(SLEEP, margin=2.0).p_equivalence == pytest.approx(0.154, abs=1e-3)


def test_not_shown_when_the_seeds_cannot_tell() -> None:
    spread = paired([0.5, -0.6, 0.2], margin=0.3)  # wide interval around 0
    assert spread.verdict == "not shown" and spread.p_equivalence > 0.05
    alone = paired([0.1], margin=0.3)
    assert alone.verdict == "not shown" and alone.why == "fewer than two seeds"
    assert paired([0.1, 0.1, 0.1], margin=0.3).verdict == "equivalent"  # exact, no spread
    assert paired([0.5, 0.5], margin=0.3).verdict == "different"
    with pytest.raises(ValueError, match="margin"):
        paired(SLEEP, margin=0.0)
