"""Every installed backend passes the conformance suite `epbench.testing.check_backend`."""

from __future__ import annotations

from epbench.registry import Registry
from epbench.testing import check_backend


def test_check_backend(backend_name: str) -> None:
    report = check_backend(Registry().get_backend(backend_name))
    assert any(line.startswith("ran: ") for line in report)
