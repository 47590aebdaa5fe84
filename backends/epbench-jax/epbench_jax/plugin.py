"""Entry point of the `epbench` plugin group: registers the JAX backend."""

from __future__ import annotations

import epbench

from .backend import JaxBackend


@epbench.hookimpl
def epbench_register_backends(register) -> None:
    register(JaxBackend())
