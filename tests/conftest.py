"""Shared fixtures: the installed backends, and real MNIST when it can be found."""

from __future__ import annotations

import pytest

from epbench.config import datasets as data
from epbench.core.errors import DataError
from epbench.plugins.registry import Registry


def installed_backends() -> list[str]:
    return list(Registry().get_backends())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        names = installed_backends()
        metafunc.parametrize(
            "backend_name",
            names or [pytest.param("none", marks=pytest.mark.skip(reason="no backend installed"))],
        )


@pytest.fixture(scope="session")
def mnist_available() -> None:
    try:
        data.find_file("mnist", "train-labels-idx1-ubyte", download=False)
    except DataError as err:
        pytest.skip(f"MNIST not found (set EPBENCH_DATA to a folder holding mnist/): {err}")
