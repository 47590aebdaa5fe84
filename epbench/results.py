"""Versioned run records: one JSON object per cell, appended to a JSONL file as each cell ends.

File layout: `<out>/<machine>/<UTC stamp>_<commit>.jsonl`, with saved traces (`--save-traces`) in a
folder of the same stem beside it. `<machine>` is `EPBENCH_MACHINE` or the host name.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import ResultsError

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed", "diverged")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "unknown"


def machine_name() -> str:
    return _slug(os.environ.get("EPBENCH_MACHINE") or socket.gethostname())


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(folder: Path | None = None) -> tuple[str, bool]:
    """(commit id, dirty flag) of the checkout epbench runs from; ("unknown", False) outside git."""
    folder = folder or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def environment() -> dict[str, Any]:
    """What a record needs to be reproduced: software versions, machine, commit."""
    commit, dirty = git_commit()
    return {
        "epbench": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "machine": machine_name(),
        "commit": commit,
        "dirty": dirty,
        "argv": sys.argv[1:],
    }


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python numbers, NaN/inf → None, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RecordWriter:
    """Appends records to one JSONL file, flushing and syncing each line as it is written."""

    def __init__(self, out: Path, *, commit: str | None = None) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        commit = commit or git_commit()[0]
        self.folder = Path(out) / machine_name()
        self.path = self.folder / f"{stamp}_{commit[:10]}.jsonl"
        self.traces_folder = self.folder / self.path.stem

    def write(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(clean(record), sort_keys=True, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(path.rglob("*.jsonl"))
        elif path.is_file():
            yield path
        else:
            raise ResultsError(f"{path}: expected a .jsonl results file or a folder, found nothing")


def read_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Records from JSONL files and folders (searched recursively), in file then line order."""
    records = []
    for path in _files(paths):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ResultsError(
                        f"{path}:{number}: expected one JSON record per line, found {err.msg}"
                    ) from None
                if not isinstance(record, dict) or "schema" not in record:
                    raise ResultsError(
                        f"{path}:{number}: expected an epbench record with a 'schema' field"
                    )
                if record["schema"] > SCHEMA_VERSION:
                    raise ResultsError(
                        f"{path}:{number}: expected schema ≤ {SCHEMA_VERSION}, "
                        f"found {record['schema']} (upgrade epbench)"
                    )
                record["_file"] = str(path)
                records.append(record)
    return records
