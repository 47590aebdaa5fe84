"""Test-only epbench plugin: backends that count the cells they run (tests/test_executors.py).

`counted-torch` and `counted-jax` are the installed torch and jax backends under another name
(composition: every call goes to the real backend, which computes the real traces). Each `build`
— one per GDU cell — first appends a line "<backend> <pid>" to the file named by
EPBENCH_COUNT_FILE, so a test can count how many cells ran and in which process.

EPBENCH_COUNT_HANG names a file holding a number n: the first build that finds n lines already
counted claims it (removes it; one process wins), writes its process id to "<file>.pid" and sleeps
for a minute in the middle of its cell, for the test to kill that process.

It is loaded as the entry point `counting` of a distribution the test writes (a `.dist-info`
folder on PYTHONPATH), so workers find it exactly as they find any installed plugin.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import epbench
from epbench.core.spec import ModelSpec
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry

HANG_SECONDS = 60


def _count(name: str) -> None:
    counts = os.environ.get("EPBENCH_COUNT_FILE")
    if not counts:
        return
    with open(counts, "a", encoding="utf-8") as handle:  # one short write: whole lines
        handle.write(f"{name} {os.getpid()}\n")
    hang = os.environ.get("EPBENCH_COUNT_HANG")
    if not hang:
        return
    marker = Path(hang)
    try:
        after = int(marker.read_text())
    except (OSError, ValueError):
        return  # claimed already, or not there
    if len(Path(counts).read_text().splitlines()) <= after:
        return
    try:
        marker.unlink()
    except FileNotFoundError:
        return  # another worker won
    pid_file = marker.with_name(marker.name + ".pid")
    pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
    pid_file.with_suffix(".tmp").replace(pid_file)
    time.sleep(HANG_SECONDS)


class CountingBackend:
    """The backend called `inner`, renamed `counted-<inner>`, counting its builds."""

    def __init__(self, inner: str) -> None:
        self.name = f"counted-{inner}"
        self._inner_name = inner
        self._inner: Any = None

    @property
    def inner(self) -> Any:
        if self._inner is None:
            registry = Registry(make_plugin_manager(select=[self._inner_name]))
            self._inner = registry.get_backend(self._inner_name)
        return self._inner

    @property
    def model_fields(self) -> frozenset[str]:
        return self.inner.model_fields

    def versions(self) -> dict[str, str]:
        return self.inner.versions()

    def device_info(self, device: str) -> str:
        return self.inner.device_info(device)

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        return self.inner.supports(model, dtype=dtype, device=device)

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> Any:
        _count(self.name)
        return self.inner.build(model, dtype=dtype, device=device)


@epbench.hookimpl
def epbench_register_backends(register: Callable[[object], None]) -> None:
    register(CountingBackend("torch"))
    register(CountingBackend("jax"))
