"""Options of the speed benchmarks (kept out of the default test run: `testpaths` in
pyproject.toml does not list this folder). Run them with

    pytest benchmarks --benchmark-json speed.json [--speed-preset quick] [--speed-models P-1h,toy]
           [--speed-backends jax] [--speed-device cuda]
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("epbench speed")
    group.addoption("--speed-preset", default="paper", help="preset of tasks/speed.toml")
    group.addoption("--speed-models", default="", help="models to run, e.g. P-1h,toy (all)")
    group.addoption("--speed-backends", default="", help="backends to run, e.g. jax (all)")
    group.addoption("--speed-device", default="cpu", choices=("cpu", "cuda"), help="device")
