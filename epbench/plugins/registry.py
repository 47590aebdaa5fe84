"""Typed getters over what the plugins registered: backends, task files and measurements by name."""

from __future__ import annotations

from pathlib import Path

import pluggy

from epbench.core.errors import EpbenchError, UnknownNameError
from epbench.core.measurement import INPUTS, Measurement
from epbench.core.protocols import Backend
from epbench.plugins.manager import make_plugin_manager


class Registry:
    """Backends and task files collected from one plugin manager (`make_plugin_manager`)."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else make_plugin_manager()
        self._backends: dict[str, Backend] = {}
        self._tasks: dict[str, Path] = {}
        self._measurements: dict[str, Measurement] = {}
        self.pm.hook.epbench_register_backends(register=self._add_backend)
        self.pm.hook.epbench_register_tasks(register=self._add_task)
        self.pm.hook.epbench_register_measurements(register=self._add_measurement)

    def _add_backend(self, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise EpbenchError(
                "a plugin registered a backend that is not an epbench.core.protocols.Backend "
                f"(name, model_fields, versions, device_info, supports, build): {backend!r}"
            )
        name = backend.name
        if not isinstance(name, str) or not name:
            raise EpbenchError(f"a plugin registered a backend without a name: {backend!r}")
        if name in self._backends:
            raise EpbenchError(
                f"backend {name!r} is registered twice "
                f"({type(self._backends[name]).__module__} and {type(backend).__module__})"
            )
        self._backends[name] = backend

    def _add_task(self, path: Path) -> None:
        path = Path(path)
        name = path.stem
        if name in self._tasks and self._tasks[name] != path:
            raise EpbenchError(
                f"task {name!r} is registered twice ({self._tasks[name]} and {path})"
            )
        self._tasks[name] = path

    def _add_measurement(self, measurement: Measurement) -> None:
        if not isinstance(measurement, Measurement):
            raise EpbenchError(
                "a plugin registered a measurement that is not an "
                f"epbench.core.measurement.Measurement: {measurement!r}"
            )
        if measurement.inputs not in INPUTS:
            raise EpbenchError(
                f"measurement {measurement.name!r}: inputs: expected one of {', '.join(INPUTS)}, "
                f"found {measurement.inputs!r}"
            )
        if measurement.name in self._measurements:
            raise EpbenchError(f"measurement {measurement.name!r} is registered twice")
        self._measurements[measurement.name] = measurement

    def get_measurement(self, name: str) -> Measurement:
        try:
            return self._measurements[name]
        except KeyError:
            raise UnknownNameError("measurement", name, list(self._measurements)) from None

    def get_measurements(self) -> dict[str, Measurement]:
        return dict(sorted(self._measurements.items()))

    def get_backend(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise UnknownNameError("backend", name, list(self._backends)) from None

    def get_backends(self) -> dict[str, Backend]:
        return dict(sorted(self._backends.items()))

    def select_backends(self, text: str) -> list[Backend]:
        """The backends `text` names (`a,b`, each once, in that order), or every installed one
        when it names none; an EpbenchError when there are none."""
        names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        backends = (
            [self.get_backend(name) for name in names]
            if names
            else list(self.get_backends().values())
        )
        if not backends:
            raise EpbenchError(
                "no backend installed: expected at least one (pip install an epbench "
                "backend such as backends/epbench-torch), found none"
            )
        return backends

    def get_task_path(self, name: str) -> Path:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownNameError("task", name, list(self._tasks)) from None

    def get_task_paths(self) -> dict[str, Path]:
        return dict(sorted(self._tasks.items()))
