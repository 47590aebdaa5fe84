"""Writing run records: the JSONL files, their atomic appends, and what a record says of the
machine and the checkout.

File layout: `<out>/<machine>/<UTC stamp>_<commit>_<pid>.jsonl`, with saved traces
(`--save-traces`) in a folder of the same stem beside it. `<machine>` is `EPBENCH_MACHINE` or the
host name of the process that writes the records (the coordinator; the host that ran a cell is
`environment.host`).

Appends are atomic (`append_atomically`): a process killed at any instant, even with SIGKILL,
leaves each file either without the new record or with it whole, never a torn line. Every record
is checked (`epbench.core.record.as_record`) before it is written, so what is written loads.
`ok_records` finds the cells a `--resume` run does not run again (`record_key`).
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
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.paths import check_folder, make_folder, output_path
from epbench.core.record import Record, as_record, load_records, record_key
from epbench.core.version import __version__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "unknown"


def machine_name() -> str:
    """`EPBENCH_MACHINE`, else the host name, as a safe folder name."""
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
    folder = folder or Path(__file__).resolve().parents[2]
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


def worker_environment() -> dict[str, Any]:
    """The fields of `environment()` that describe the process running a cell (its host, CPU,
    Python, numpy, process id), for records of cells run by a worker, possibly on another host."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python numbers, NaN/inf → None, tuples → lists."""
    if isinstance(value, Mapping):
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


def append_atomically(path: Path, data: bytes) -> None:
    """Append `data` to `path` so that the file is, at every instant, either the old content or
    the old content plus `data`: both go to a temporary file in the same folder (fsynced), which
    is then renamed over `path`. A plain append can be torn by SIGKILL (the kernel may stop a
    write between pages); the cost here is rewriting the file, small for record files. A
    leftover `.<name>.<pid>.tmp` of a killed process is ignored by every reader."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):  # a line torn by an older, plain-append epbench
        old += b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(old + data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


class RecordWriter:
    """Appends records to one JSONL file, atomically (`append_atomically`) and synced to disk.

    `folder` (`<out>/<machine>`) also holds the training checkpoints and, in `traces_folder`, the
    saved traces; worker processes get a writer for the same file with `RecordWriter.at`."""

    def __init__(self, out: Path, *, commit: str | None = None) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        commit = commit or git_commit()[0]
        out = check_folder(Path(out))  # `--out` naming a file: one line, before any cell runs
        # the pid keeps two runs started in the same second from sharing (and racing on) one file
        name = f"{stamp}_{_slug(commit[:10])}_{os.getpid()}.jsonl"
        self._place(output_path(out, machine_name(), name))

    def _place(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent
        self.traces_folder = output_path(self.folder, path.stem)

    @classmethod
    def at(cls, path: Path) -> RecordWriter:
        """A writer for the records file `path` (its folder, traces folder and checkpoints)."""
        writer = cls.__new__(cls)
        writer._place(Path(path))
        return writer

    def write(self, record: Record | Mapping[str, Any]) -> None:
        """Append `record` (a `Record`, or a dict of any schema: upgraded and checked first; a
        `ResultsError` if it would not load) as one line, its top-level keys sorted."""
        make_folder(self.folder)
        raw = record.to_dict() if isinstance(record, Record) else clean(dict(record))
        data = as_record({**raw, "_file": str(self.path)}).to_dict()  # errors name the file
        data = clean(data)
        # top-level keys sorted; inside them the order the measurement gave (a curve by step)
        line = json.dumps({key: data[key] for key in sorted(data)}, allow_nan=False)
        append_atomically(self.path, (line + "\n").encode("utf-8"))


def ok_records(folder: Path) -> dict[tuple, Record]:
    """The `ok` records of the JSONL files in `folder` (not recursive), by `record_key`; the last
    one wins. Lines that are not readable records are passed over: this is a lookup for
    `--resume`, not a validation (`read_records` reports them)."""
    files = sorted(p for p in Path(folder).glob("*.jsonl") if p.is_file())
    loaded = load_records(files)
    return {record_key(r): r for r in loaded.records if r.status == "ok"}
