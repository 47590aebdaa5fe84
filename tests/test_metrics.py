"""The metrics of docs/theory.md §4 on hand-made series."""

from __future__ import annotations

import math

import numpy as np

from epbench.core.metrics import compare, cosine, rmse_per_component, sign_agreement


def test_rmse_definition_and_zero_convention() -> None:
    a = np.array([[1.0, 0.0], [2.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = rmse_per_component(a, b)
    assert math.isclose(out[0], math.sqrt(1.0 / 5.0))
    assert out[1] == 0.0  # both series all zero


def test_rmse_is_symmetric_in_scale() -> None:
    a = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(rmse_per_component(a, 2 * a), rmse_per_component(2 * a, a))
    assert np.all(rmse_per_component(a, a) == 0)


def test_cosine_and_sign() -> None:
    assert math.isclose(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 1 / math.sqrt(2))
    assert math.isnan(cosine(np.zeros(2), np.ones(2)))
    assert sign_agreement(np.array([1.0, -1.0, 0.0, 2.0]), np.array([3.0, 1.0, 0.0, 1.0])) == 0.75


def test_compare_uses_cumulative_series_for_parameters_only() -> None:
    bptt = np.array([[1.0], [1.0], [1.0]])
    ep = -np.array([[1.0], [1.0], [0.0]])  # EP is the negative of BPTT in the ideal case
    weight = compare("W0_1", bptt, ep)
    state = compare("s0", bptt, ep)
    cum_a, cum_b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0])
    assert math.isclose(weight["rmse"], math.sqrt(np.sum((cum_a - cum_b) ** 2) / np.sum(cum_a**2)))
    assert math.isclose(state["rmse"], math.sqrt(1.0 / 3.0))
    assert math.isclose(weight["rel_error"], 1 / math.sqrt(3))
    assert weight["sign"] == 1.0 and weight["cosine"] == 1.0
    assert math.isclose(compare("b0", bptt, -bptt)["rmse"], 0.0)
