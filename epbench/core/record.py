"""The run record: one JSON object per cell, typed once when read, and the one loader of files.

What comes in: the JSON objects of JSONL results files (or the dicts the run loop builds as cells
end). What goes out: `Record`s, frozen, with the top-level fields typed and checked, the
measurement's own payload in `metrics` (read through `metrics_of`), unknown keys kept in `extra`.

Schema versions (the `schema` key of every record):

    1   the records of epbench up to this version: `measurement` absent meant "gdu" and
        `device` absent meant "cpu" (readers filled both in)
    2   both always present; every other field as in 1

`upgrade` turns a record of any older version into the current one, so every file ever written
still loads; a newer version is refused (a newer epbench wrote it). `Record.from_dict` checks the
types (a one-line `ResultsError`: what was expected, what was found, where) and `to_dict` gives
back the same JSON (keys the source did not have stay absent).

`load_records` reads files and folders (recursively, each real file once, symlink loops
included) and returns the good records and the problems (file, line, message): a line that is not
JSON, a torn last line (a run killed while an old epbench appended), wrong types or a newer schema
are problems, not crashes. `read_records` prints the problems to stderr, one line each, and
raises only when nothing usable remains.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from epbench.core.errors import ResultsError

SCHEMA_VERSION = 2
STATUSES = ("ok", "skipped", "failed", "diverged")
KEY_FIELDS = ("cell", "preset", "config_hash", "measurement", "backend", "device", "dtype", "seed")
_NOT_SERIALISED = ("extra", "file", "line", "omitted")
MAX_NESTING = 32  # objects in objects of one record (epbench writes at most 6)


def _meta(key: str, kind: str, *, required: bool = False) -> dict[str, Any]:
    """Field metadata: its JSON key, its kind (`_KINDS`) and whether a source must have it."""
    return {"key": key, "kind": kind, "required": required}


def _mapping() -> Any:
    return field(default_factory=dict, metadata=_meta("", "mapping"))


@dataclass(frozen=True, kw_only=True)
class Record:
    """One cell's record. The JSON key of each field is its name, except `schema_version`
    (`schema`). `file` and `line` say where it was read (not part of the JSON); `omitted` holds
    the JSON keys the source did not have, which `to_dict` leaves out again."""

    schema_version: int = field(
        default=SCHEMA_VERSION, metadata=_meta("schema", "int", required=True)
    )
    status: str = field(metadata=_meta("status", "status", required=True))
    task: str | None = field(default=None, metadata=_meta("task", "str"))
    cell: str | None = field(default=None, metadata=_meta("cell", "str"))
    preset: str | None = field(default=None, metadata=_meta("preset", "str"))
    variant: Mapping[str, Any] = _mapping()
    config: Mapping[str, Any] = _mapping()
    config_hash: str | None = field(default=None, metadata=_meta("config_hash", "str"))
    measurement: str = field(default="gdu", metadata=_meta("measurement", "str"))
    backend: str | None = field(default=None, metadata=_meta("backend", "str"))
    reference: str | None = field(default=None, metadata=_meta("reference", "str"))  # parity
    device: str = field(default="cpu", metadata=_meta("device", "str"))
    dtype: str | None = field(default=None, metadata=_meta("dtype", "str"))
    estimator: str | None = field(default=None, metadata=_meta("estimator", "str"))
    depth: int | None = field(default=None, metadata=_meta("depth", "int"))
    angle: float | None = field(default=None, metadata=_meta("angle", "number"))
    beta_used: float | None = field(default=None, metadata=_meta("beta_used", "number"))
    symmetric: bool | None = field(default=None, metadata=_meta("symmetric", "bool"))
    seed: int | None = field(default=None, metadata=_meta("seed", "int"))
    tolerance: float | None = field(default=None, metadata=_meta("tolerance", "number"))
    started: str | None = field(default=None, metadata=_meta("started", "str"))
    environment: Mapping[str, Any] = _mapping()
    reason: str | None = field(default=None, metadata=_meta("reason", "str"))
    metrics: Mapping[str, Any] = _mapping()
    timings: Mapping[str, Any] = _mapping()
    peak_memory_bytes: float | None = field(
        default=None, metadata=_meta("peak_memory_bytes", "number")
    )
    attempts: int | None = field(default=None, metadata=_meta("attempts", "int"))
    traces: str | None = field(default=None, metadata=_meta("traces", "str"))
    checkpoints: Mapping[str, Any] = _mapping()
    extra: Mapping[str, Any] = field(default_factory=dict)
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)
    omitted: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "record") -> Record:
        """The record of one JSON object of the current schema (`upgrade` older ones first).
        Raises `ResultsError` (`where: field: expected …, found …`) on a wrong type or a missing
        `schema` or `status`. A `_file` key (the old readers' annotation) becomes `file`."""
        try:
            return _parse(raw)
        except ResultsError as err:
            raise ResultsError(f"{where}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record: `from_dict(raw).to_dict() == raw` (without `_file`)."""
        out = {_key(f): getattr(self, f.name) for f in _FIELDS if _key(f) not in self.omitted}
        out.update(self.extra)
        return out

    @property
    def where(self) -> str:
        """`file:line` where the record was read, or "record" for one built in memory."""
        if self.file is None:
            return "record"
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    # Transitional read access by JSON key, for code not yet moved to the attributes (the run
    # loop's callers and older tests); views read attributes.
    def __getitem__(self, key: str) -> Any:
        if key == "_file" and self.file is not None:
            return self.file
        if key in self.extra:
            return self.extra[key]
        name = _NAMES.get(key)
        if name is None or key in self.omitted:
            raise KeyError(key)
        return getattr(self, name)

    def get(self, key: str, default: Any = None) -> Any:
        """`self[key]`, or `default` where the record has no such key (transitional)."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _ABSENT) is not _ABSENT


_ABSENT = object()
_FIELDS = tuple(f for f in fields(Record) if f.name not in _NOT_SERIALISED)


def _key(f: Any) -> str:
    return f.metadata["key"] or f.name


_NAMES = MappingProxyType({_key(f): f.name for f in _FIELDS})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# kind → (what is expected, the check)
_KINDS: Mapping[str, tuple[str, Callable[[Any], bool]]] = MappingProxyType(
    {
        "str": ("a string or null", lambda v: v is None or isinstance(v, str)),
        "int": ("an integer or null", lambda v: v is None or _is_int(v)),
        "number": ("a number or null", lambda v: v is None or _is_number(v)),
        "bool": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
        "mapping": ("an object", lambda v: isinstance(v, Mapping)),
        "status": (f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES),
    }
)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _parse(raw: Mapping[str, Any]) -> Record:
    """`Record.from_dict` without the location in its errors."""
    if not isinstance(raw, Mapping):
        raise ResultsError(f"expected a JSON object (an epbench record), found {_shown(raw)}")
    values: dict[str, Any] = {}
    omitted = set()
    for f in _FIELDS:
        key = _key(f)
        if key not in raw:
            if f.metadata["required"]:
                raise ResultsError(f"{key}: expected an epbench record with {key!r}, found none")
            omitted.add(key)
            continue
        expected, check = _KINDS[f.metadata["kind"]]
        if key == "schema" and not _is_int(raw[key]):
            expected, check = "an integer", _is_int
        if not check(raw[key]):
            raise ResultsError(f"{key}: expected {expected}, found {_shown(raw[key])}")
        values[f.name] = raw[key]
    extra = {k: v for k, v in raw.items() if k not in _NAMES and k != "_file"}
    source = raw.get("_file")
    return Record(
        **values,
        extra=extra,
        file=str(source) if source is not None else None,
        omitted=frozenset(omitted),
    )


# --- schema versions --------------------------------------------------------------------------


def _from_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 → 2: the defaults its readers assumed, written out."""
    return {"measurement": "gdu", "device": "cpu", **raw, "schema": 2}


# version → the function that turns a record of that version into one of the next
_UPGRADES: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] = MappingProxyType({1: _from_1})


def upgrade(raw: Mapping[str, Any], *, where: str = "record") -> dict[str, Any]:
    """A copy of the JSON object `raw` in the current schema (`SCHEMA_VERSION`): the upgrade of
    each version to the next applied in turn (module doc); the current version is returned as it
    is. Raises `ResultsError` for an object without an integer `schema` or of a newer schema."""
    if not isinstance(raw, Mapping):
        raise ResultsError(
            f"{where}: expected a JSON object (an epbench record), found {_shown(raw)}"
        )
    version = raw.get("schema")
    if not _is_int(version) or version < 1:
        found = "none" if version is None else _shown(version)
        raise ResultsError(
            f"{where}: schema: expected an epbench record version ≥ 1, found {found}"
        )
    if version > SCHEMA_VERSION:
        raise ResultsError(
            f"{where}: schema: expected ≤ {SCHEMA_VERSION}, found {version} "
            "(written by a newer epbench: upgrade epbench)"
        )
    out = dict(raw)
    while out["schema"] < SCHEMA_VERSION:
        out = _UPGRADES[out["schema"]](out)
    return out


def as_record(record: Record | Mapping[str, Any]) -> Record:
    """`record` as a `Record`: a Record as it is, a dict (the run loop's, of any schema; without
    `schema` it is taken as current) upgraded and checked. Raises `ResultsError`."""
    if isinstance(record, Record):
        return record
    raw = record if "schema" in record else {**record, "schema": SCHEMA_VERSION}
    where = str(record.get("_file") or "record")
    return Record.from_dict(upgrade(raw, where=where), where=where)


def metrics_of(record: Record, name: str) -> Mapping[str, Any]:
    """The object `metrics[name]` of a record (a measurement's payload), or an empty mapping
    where the record has none (a skipped or failed cell, another measurement)."""
    value = record.metrics.get(name)
    return value if isinstance(value, Mapping) else MappingProxyType({})


def metric(record: Record, name: str) -> Any:
    """The scalar (or list) `metrics[name]` of a record, or None."""
    return record.metrics.get(name)


# --- keys ---------------------------------------------------------------------------------------


def cell_key(**fields: Any) -> tuple:
    """The `KEY_FIELDS` of a cell, in order: what makes two records the same cell of a matrix
    (`--resume` does not run a cell again whose key has an `ok` record)."""
    return tuple(fields[name] for name in KEY_FIELDS)


def record_key(record: Record | Mapping[str, Any]) -> tuple:
    """`cell_key` of a record (a dict is read with `as_record`: `measurement` defaults to gdu)."""
    typed = as_record(record)
    return cell_key(**{name: getattr(typed, name) for name in KEY_FIELDS})


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A line (or file) that gave no record: `file`, 1-based `line` (0: the file itself)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """What `load_records` read: the good records in file then line order, the problems, and
    the files read (each real file once)."""

    records: tuple[Record, ...]
    problems: tuple[Problem, ...]
    files: tuple[str, ...]


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path]:
    """The .jsonl files below `folder`, symlinks followed, each real folder entered once."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
            identity = _identity(entry) if is_dir else None
        except OSError:  # a dangling link
            continue
        if is_dir and identity not in seen:
            seen.add(identity)
            yield from _walk(entry, seen)
        elif is_file and entry.name.endswith(".jsonl") and not entry.name.startswith("."):
            yield entry


def _files(paths: Iterable[Path | str]) -> tuple[list[Path], list[Problem]]:
    """The files to read from `paths` (files as given, folders searched), each real file once."""
    files, problems, folders, seen = [], [], set(), set()
    for path in map(Path, paths):
        if path.is_dir():
            folders.add(_identity(path))
            found = list(_walk(path, folders))
        elif path.is_file():
            found = [path]
        else:
            message = "expected a .jsonl results file or a folder, found nothing"
            problems.append(Problem(file=str(path), line=0, message=message))
            continue
        for file in found:
            identity = _identity(file)
            if identity not in seen:
                seen.add(identity)
                files.append(file)
    return files, problems


def _read_line(text: str, *, where: str, last: bool) -> Record:
    """The record of one line of a file (`where` = file:line); raises `ResultsError`."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        if last and not text.endswith("\n"):
            raise ResultsError(
                f"{where}: expected a whole record, found a torn last line (a killed run)"
            ) from None
        raise ResultsError(f"{where}: expected one JSON record per line, found {err.msg}") from None
    except RecursionError:  # nested so deep that json cannot read it
        raw = _TOO_DEEP
    if raw is _TOO_DEEP or nesting_depth(raw) > MAX_NESTING:
        raise ResultsError(
            f"{where}: expected a record nested at most {MAX_NESTING} deep, found deeper nesting"
        )
    return Record.from_dict(upgrade(raw, where=where), where=where)


_TOO_DEEP = object()


def nesting_depth(value: Any, *, limit: int = MAX_NESTING) -> int:
    """How deeply mappings and lists nest in `value` (0 for a scalar), without recursion (a
    value too deep for Python's recursion is fine); the count stops at `limit + 1`."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (Mapping, list)) and depth <= limit:
            deepest = max(deepest, depth + 1)
            children = node.values() if isinstance(node, Mapping) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _load_file(path: Path) -> tuple[list[Record], list[Problem]]:
    """The records and problems of one JSONL file."""
    records, problems = [], []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = list(handle)
    except (OSError, UnicodeDecodeError) as err:
        return [], [Problem(file=str(path), line=0, message=f"expected a UTF-8 text file: {err}")]
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = _read_line(text, where=where, last=number == len(lines))
        except ResultsError as err:
            message = str(err).removeprefix(f"{where}: ")
            problems.append(Problem(file=str(path), line=number, message=message))
            continue
        records.append(_located(record, file=str(path), line=number))
    return records, problems


def _located(record: Record, *, file: str, line: int) -> Record:
    return replace(record, file=file, line=line)


def load_records(paths: Iterable[Path | str]) -> Loaded:
    """Records of JSONL files and folders (searched recursively, symlinks followed, each real
    file once), in file (path order) then line order, and the problems of the lines and paths
    that gave none (module doc). Never raises for a bad line or a missing path."""
    files, problems = _files(paths)
    records: list[Record] = []
    for path in files:
        found, bad = _load_file(path)
        records += found
        problems += bad
    return Loaded(records=tuple(records), problems=tuple(problems), files=tuple(map(str, files)))


def read_records(paths: Iterable[Path | str]) -> list[Record]:
    """The records of `load_records(paths)`; its problems are printed to stderr, once each, one
    line each (`file:line: …`). Raises `ResultsError` when no record remains: its message names
    the first problem (which is then not printed as well) and how many there were."""
    paths = list(paths)
    loaded = load_records(paths)
    problems = list(dict.fromkeys(map(str, loaded.problems)))
    if loaded.records:
        for problem in problems:
            print(problem, file=sys.stderr)
        return list(loaded.records)
    for problem in problems[1:]:
        print(problem, file=sys.stderr)
    where = ", ".join(map(str, paths)) or "no paths"
    if not problems:
        raise ResultsError(f"{where}: expected epbench records, found none")
    more = f" (and {len(problems) - 1} more problems above)" if len(problems) > 1 else ""
    raise ResultsError(f"{problems[0]}{more}; no epbench records remain in {where}")
