"""Deprecated: this module moved. Import the record type, the loader and the keys from
`epbench.core.record`, the writer and the environment probe from `epbench.run.store`.

A temporary re-export while the callers switch (the lead deletes it then). The names of
`epbench.run.store` are looked up when first used, so that the core imports nothing of the run
layer at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

from epbench.core.record import (
    KEY_FIELDS,
    SCHEMA_VERSION,
    STATUSES,
    Loaded,
    Problem,
    Record,
    as_record,
    cell_key,
    load_records,
    read_records,
    record_key,
    upgrade,
)

_MOVED_TO_STORE = (
    "RecordWriter",
    "append_atomically",
    "clean",
    "cpu_model",
    "environment",
    "git_commit",
    "machine_name",
    "ok_records",
    "worker_environment",
)

__all__ = [
    "KEY_FIELDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Loaded",
    "Problem",
    "Record",
    "as_record",
    "cell_key",
    "load_records",
    "read_records",
    "record_key",
    "upgrade",
    *_MOVED_TO_STORE,
]


def __getattr__(name: str) -> Any:
    """The names that moved to `epbench.run.store`, imported on first use."""
    if name in _MOVED_TO_STORE:
        return getattr(importlib.import_module("epbench.run.store"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
