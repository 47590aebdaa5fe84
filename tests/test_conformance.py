"""Every installed backend passes the conformance suite `epbench.plugins.conformance.check_backend`."""

from __future__ import annotations

from epbench.plugins.conformance import check_backend
from epbench.plugins.registry import Registry


def test_check_backend(backend_name: str) -> None:
    report = check_backend(Registry().get_backend(backend_name))
    assert any(line.startswith("ran: ") for line in report)
